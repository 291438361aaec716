"""Run the controllers against an API server: the bundled one (``kubestash up``) or any cluster."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig

from kubestash.api.storage import Backend
from kubestash.backends.base import ObjectBackend
from kubestash.backends.deadline import DEFAULT_SECONDS, TimeLimited
from kubestash.backends.factory import open_backend
from kubestash.controllers.backupstorage import BackupStorageReconciler, Opener
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.repository import RepositoryReconciler
from kubestash.runtime.controller import Controller
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)
COMPONENT = "kubestash-operator"


def storage_of_repository(repo: dict[str, Any]) -> Iterable[Key]:
    ref = (repo.get("spec") or {}).get("storageRef") or {}
    if ref.get("name"):
        yield str(ref.get("namespace") or repo["metadata"].get("namespace") or ""), str(ref["name"])


class Operator:
    def __init__(
        self,
        client: AsyncClient,
        *,
        sync_interval: float = 300.0,
        retry_interval: float = 30.0,
        backend_opener: Opener = open_backend,
        backend_timeout: float = DEFAULT_SECONDS,
        workers: int = 4,
    ) -> None:
        """``backend_opener`` decides how a BackupStorage spec becomes a backend (tests point Azure at azurite);
        every backend request it opens gets ``backend_timeout`` seconds (:mod:`kubestash.backends.deadline`).
        Reconciles wait on I/O, so ``workers`` per controller are cheap; several keep a dead endpoint from
        delaying every other object."""
        self.client = client

        def opener(storage: Backend, secret: Mapping[str, bytes] | None) -> ObjectBackend:
            return TimeLimited(backend_opener(storage, secret), backend_timeout)

        self.storages = Informer(client, by_kind("BackupStorage"), resync=sync_interval)
        self.repositories = Informer(client, by_kind("Repository"))
        reconciler = BackupStorageReconciler(
            client,
            self.storages,
            self.repositories,
            opener,
            EventRecorder(client, COMPONENT),
            retry_interval=retry_interval,
            sync_interval=sync_interval,
        )
        self.backup_storages = Controller("backupstorage", reconciler, workers=workers)
        self.backup_storages.watch(self.storages)
        self.backup_storages.watch(self.repositories, storage_of_repository)
        self.repository_controller = Controller(
            "repository",
            RepositoryReconciler(
                client,
                self.repositories,
                self.storages,
                opener,
                EventRecorder(client, COMPONENT),
                retry_interval=retry_interval,
            ),
            workers=workers,
        )
        self.repository_controller.watch(self.repositories)
        self.repository_controller.watch(self.storages, self._repositories_of_storage)
        self.informers = [self.storages, self.repositories]
        self.controllers = [self.backup_storages, self.repository_controller]

    def _repositories_of_storage(self, storage: dict[str, Any]) -> Iterable[Key]:
        """A storage turning Ready (or changing) re-examines the repositories that live in it."""
        key = (storage["metadata"].get("namespace") or "", storage["metadata"]["name"])
        for repo in self.repositories.list():
            if next(iter(storage_of_repository(repo)), None) == key:
                yield repo["metadata"].get("namespace") or "", repo["metadata"]["name"]

    async def start(self) -> None:
        for informer in self.informers:
            informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        for controller in self.controllers:
            controller.start()
        log.info("controllers running: %s", ", ".join(c.name for c in self.controllers))

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        for informer in self.informers:
            await informer.stop()


def client_from(kubeconfig: Path | None) -> AsyncClient:
    config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=COMPONENT)
