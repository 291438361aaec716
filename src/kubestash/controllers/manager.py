"""Run the controllers against an API server: the bundled one (``kubestash up``) or any cluster."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import PersistentVolumeClaim

from kubestash.api.storage import Backend
from kubestash.backends.base import ObjectBackend
from kubestash.backends.deadline import DEFAULT_SECONDS, TimeLimited
from kubestash.backends.factory import open_backend
from kubestash.controllers.backupconfiguration import BackupConfigurationReconciler, Clock, utcnow
from kubestash.controllers.backupsession import BackupSessionReconciler
from kubestash.controllers.backupstorage import BackupStorageReconciler, Opener
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.provisioner import LocalVolumeProvisioner
from kubestash.controllers.repository import RepositoryReconciler
from kubestash.controllers.restoresession import RESTORE_KEY_PREFIX, RestoreSessionReconciler
from kubestash.controllers.snapshot import SnapshotReconciler
from kubestash.engine.base import Engine
from kubestash.executor.local import Invocation, LocalExecutor
from kubestash.runtime.controller import Controller
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)
COMPONENT = "kubestash-operator"


def storage_of_repository(repo: dict[str, Any]) -> Iterable[Key]:
    ref = (repo.get("spec") or {}).get("storageRef") or {}
    if ref.get("name"):
        yield str(ref.get("namespace") or repo["metadata"].get("namespace") or ""), str(ref["name"])


def invoker_of(obj: dict[str, Any]) -> Iterable[Key]:
    """A Repository or BackupSession created for a BackupConfiguration, by its invoker label."""
    meta = obj["metadata"]
    name = (meta.get("labels") or {}).get("kubestash.com/invoker-name")
    if name:
        yield str(meta.get("namespace") or ""), str(name)


def session_of_snapshot(snap: dict[str, Any]) -> Iterable[Key]:
    name = (snap.get("spec") or {}).get("backupSession")
    if name:
        yield str(snap["metadata"].get("namespace") or ""), str(name)


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
        kubeconfig: Path | None = None,
        engine: Engine | None = None,
        clock: Clock = utcnow,
        install_addons: bool = True,
        prewarm: bool = False,
        volume_root: Path | None = None,
    ) -> None:
        """``backend_opener`` decides how a BackupStorage spec becomes a backend (tests point Azure at azurite);
        every backend request it opens gets ``backend_timeout`` seconds (:mod:`kubestash.backends.deadline`).
        Reconciles wait on I/O, so ``workers`` per controller are cheap; several keep a dead endpoint from
        delaying every other object. ``kubeconfig`` is what backup processes use to reach the API server;
        ``clock`` drives schedules (tests move time); ``install_addons`` applies the built-in Addon catalog;
        ``prewarm`` starts the executor's task processes at once (the long-running commands do; tests do not);
        ``volume_root`` turns on embedded mode's provisioner for unbound claims (:mod:`.provisioner`)."""
        from kubestash.engine.select import configured_engine

        self.client = client
        self.install_addons = install_addons
        self.prewarm = prewarm
        events = EventRecorder(client, COMPONENT)

        def opener(storage: Backend, secret: Mapping[str, bytes] | None) -> ObjectBackend:
            return TimeLimited(backend_opener(storage, secret), backend_timeout)

        self.storages = Informer(client, by_kind("BackupStorage"), resync=sync_interval)
        self.repositories = Informer(client, by_kind("Repository"))
        self.configs = Informer(client, by_kind("BackupConfiguration"))
        self.sessions = Informer(client, by_kind("BackupSession"))
        self.snapshots = Informer(client, by_kind("Snapshot"))
        self.restores = Informer(client, by_kind("RestoreSession"))
        self.executor = LocalExecutor(self._process_exited, kubeconfig=str(kubeconfig) if kubeconfig else None)

        self.backup_storages = Controller(
            "backupstorage",
            BackupStorageReconciler(
                client,
                self.storages,
                self.repositories,
                opener,
                events,
                retry_interval=retry_interval,
                sync_interval=sync_interval,
            ),
            workers=workers,
        )
        self.backup_storages.watch(self.storages)
        self.backup_storages.watch(self.repositories, storage_of_repository)

        repository_reconciler = RepositoryReconciler(
            client, self.repositories, self.storages, opener, events, retry_interval=retry_interval
        )
        self.repository_controller = Controller("repository", repository_reconciler, workers=workers)
        self.repository_controller.watch(self.repositories)
        self.repository_controller.watch(self.storages, self._repositories_of_storage)

        self.backup_configurations = Controller(
            "backupconfiguration",
            BackupConfigurationReconciler(
                client, self.configs, self.storages, self.repositories, events, clock, retry_interval
            ),
            workers=workers,
        )
        self.backup_configurations.watch(self.configs)
        self.backup_configurations.watch(self.repositories, invoker_of)
        self.backup_configurations.watch(self.storages, self._configs_of_storage)

        self.backup_sessions = Controller(
            "backupsession",
            BackupSessionReconciler(
                client,
                self.sessions,
                self.configs,
                self.snapshots,
                self.executor,
                events,
                str(kubeconfig) if kubeconfig else None,
                clock,
            ),
            workers=workers,
        )
        self.backup_sessions.watch(self.sessions)
        self.backup_sessions.watch(self.snapshots, session_of_snapshot)

        self.snapshot_controller = Controller(
            "snapshot",
            SnapshotReconciler(
                client, self.snapshots, self.repositories, repository_reconciler, engine or configured_engine(), clock
            ),
            workers=workers,
        )
        self.snapshot_controller.watch(self.snapshots)

        self.restore_sessions = Controller(
            "restoresession",
            RestoreSessionReconciler(
                client,
                self.restores,
                self.snapshots,
                self.configs,
                self.executor,
                events,
                str(kubeconfig) if kubeconfig else None,
                clock,
            ),
            workers=workers,
        )
        self.restore_sessions.watch(self.restores)

        self.informers = [self.storages, self.repositories, self.configs, self.sessions, self.snapshots, self.restores]
        self.controllers = [
            self.backup_storages,
            self.repository_controller,
            self.backup_configurations,
            self.backup_sessions,
            self.snapshot_controller,
            self.restore_sessions,
        ]
        if volume_root is not None:
            claims = Informer(client, PersistentVolumeClaim)
            provisioner = Controller("provisioner", LocalVolumeProvisioner(client, claims, volume_root), workers=1)
            provisioner.watch(claims)
            self.informers.append(claims)
            self.controllers.append(provisioner)

    def _process_exited(self, invocation: Invocation, code: int, killed_for: str | None) -> None:
        restore = invocation.key.startswith(RESTORE_KEY_PREFIX)
        (self.restore_sessions if restore else self.backup_sessions).queue.add(invocation.owner)

    def _repositories_of_storage(self, storage: dict[str, Any]) -> Iterable[Key]:
        """A storage turning Ready (or changing) re-examines the repositories that live in it."""
        key = (storage["metadata"].get("namespace") or "", storage["metadata"]["name"])
        for repo in self.repositories.list():
            if next(iter(storage_of_repository(repo)), None) == key:
                yield repo["metadata"].get("namespace") or "", repo["metadata"]["name"]

    def _configs_of_storage(self, storage: dict[str, Any]) -> Iterable[Key]:
        for config in self.configs.list():
            yield config["metadata"].get("namespace") or "", config["metadata"]["name"]

    async def start(self) -> None:
        if self.install_addons:
            from kubestash.tasks.catalog import install_catalog

            await install_catalog(self.client)
        for informer in self.informers:
            informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        for controller in self.controllers:
            controller.start()
        if self.prewarm:
            await self.executor.prewarm()
        log.info("controllers running: %s", ", ".join(c.name for c in self.controllers))

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        await self.executor.stop()
        for informer in self.informers:
            await informer.stop()


def client_from(kubeconfig: Path | None) -> AsyncClient:
    config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=COMPONENT)
