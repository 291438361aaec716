"""Start the bundled API server: data directory, CRDs, default namespaces, TLS, kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from kubestash.api.crd import all_crds
from kubestash.apiserver.app import ServerState, build_app
from kubestash.apiserver.gc import GarbageCollector
from kubestash.apiserver.objects import ObjectManager, WriteOptions
from kubestash.apiserver.resources import ResourceRegistry
from kubestash.apiserver.security import ensure_credentials, write_private_text
from kubestash.apiserver.store import Store
from kubestash.runtime.lifecycle import wait_for_shutdown_signal

log = logging.getLogger(__name__)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
SERVER_MANAGER = "kubestash-apiserver"


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 6443
    insecure_http: bool = False
    install_crds: bool = True
    """Install KubeStash's CRDs at start-up; off gives a plain API server, like an empty cluster."""
    watch_history: int = 50_000
    """Change events kept for watches to resume from; older resourceVersions get 410 Gone."""
    extra_crds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kubeconfig_path(self) -> Path:
        return self.data_dir / "kubeconfig"


class ApiServer:
    """One running server; ``start``/``stop`` for tests, :func:`run` for the CLI."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.runner: web.AppRunner | None = None
        self.port = config.port
        self.state: ServerState | None = None

    @property
    def url(self) -> str:
        scheme = "http" if self.config.insecure_http else "https"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.config.kubeconfig_path

    async def start(self) -> None:
        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(data_dir / "store.db", history=self.config.watch_history)
        registry = ResourceRegistry()
        manager = ObjectManager(store, registry)
        for crd in store.list_objects(CRD_KEY):
            manager.install_crd(crd)
        _ensure_namespaces(manager)
        for crd in [*(all_crds() if self.config.install_crds else []), *self.config.extra_crds]:
            _upsert_crd(manager, crd)
        gc = GarbageCollector(manager)
        gc.start()
        creds = None if self.config.insecure_http else ensure_credentials(data_dir)
        token = None if creds is None else creds.token
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = sock.getsockname()[1]
        self.state = ServerState(store, registry, manager, gc, token, f"{self.config.host}:{self.port}")
        self.runner = web.AppRunner(build_app(self.state), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.SockSite(
            self.runner, sock, ssl_context=None if creds is None else creds.ssl_context(), shutdown_timeout=1.0
        )
        await site.start()
        self._write_kubeconfig(None if creds is None else creds.ca_data(), token)
        log.info("serving on %s", self.url)

    async def stop(self) -> None:
        if self.state is not None:
            await self.state.gc.stop()
            self.state.store.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def _write_kubeconfig(self, ca_data: str | None, token: str | None) -> None:
        cluster: dict[str, Any] = {"server": self.url}
        if ca_data:
            cluster["certificate-authority-data"] = ca_data
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubestash", "cluster": cluster}],
            "users": [{"name": "kubestash-admin", "user": user}],
            "contexts": [
                {
                    "name": "kubestash",
                    "context": {"cluster": "kubestash", "user": "kubestash-admin", "namespace": "default"},
                }
            ],
            "current-context": "kubestash",
            "preferences": {},
        }
        write_private_text(self.kubeconfig_path, yaml.safe_dump(config, sort_keys=False))


def _ensure_namespaces(manager: ObjectManager) -> None:
    rt = manager.registry.get("", "v1", "namespaces")
    assert rt is not None
    for name in DEFAULT_NAMESPACES:
        if manager.store.get("namespaces", "", name) is None:
            manager.create(
                rt,
                "",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                WriteOptions(field_manager=SERVER_MANAGER),
            )


def _upsert_crd(manager: ObjectManager, crd: dict[str, Any]) -> None:
    rt = manager.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rt is not None
    name = crd["metadata"]["name"]
    stored = manager.store.get(CRD_KEY, "", name)
    if stored is None:
        manager.create(rt, "", copy.deepcopy(crd), WriteOptions(field_manager=SERVER_MANAGER))
    elif stored.get("spec") != crd["spec"]:
        updated = copy.deepcopy(stored)
        updated["spec"] = copy.deepcopy(crd["spec"])
        manager.update(rt, "", name, updated, WriteOptions(field_manager=SERVER_MANAGER))


def run(config: ServerConfig, *, with_controllers: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; with controllers, the operator runs in the same process."""

    async def main() -> None:
        server = ApiServer(config)
        await server.start()
        operator = None
        try:
            if with_controllers:
                from kubestash.controllers.manager import Operator, client_from

                operator = Operator(
                    client_from(server.kubeconfig_path),
                    kubeconfig=server.kubeconfig_path,
                    prewarm=True,
                    volume_root=config.data_dir / "volumes",
                )
                await operator.start()
            await wait_for_shutdown_signal()
        finally:
            if operator is not None:
                await operator.stop()
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
