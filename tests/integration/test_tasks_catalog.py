"""Installing the built-in Addon/Function catalog into the bundled API server, seen through the real kubectl."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from lightkube import AsyncClient, Client, KubeConfig

from apiserver_process import ServerProcess
from kubestash.api.admission import admit, review
from kubestash.controllers.kinds import by_kind
from kubestash.tasks.catalog import builtin_catalog, install_catalog

ADDONS = ["workload-addon", "pvc-addon"]
FUNCTIONS = ["workload-backup", "workload-restore", "pvc-backup", "pvc-restore"]


def _install(server: ServerProcess) -> list[str]:
    async def run() -> list[str]:
        client = AsyncClient(config=KubeConfig.from_file(str(server.kubeconfig)))
        try:
            return await install_catalog(client)
        finally:
            await client.close()

    return asyncio.run(run())


def _versions(server: ServerProcess) -> dict[str, str]:
    kube = Client(config=KubeConfig.from_file(str(server.kubeconfig)))
    versions: dict[str, str] = {}
    for obj in builtin_catalog():
        stored: Any = kube.get(by_kind(obj.kind), obj.name)
        versions[f"{obj.kind}/{obj.name}"] = stored.metadata.resourceVersion
    return versions


def _names(server: ServerProcess, resource: str) -> list[str]:
    table = server.kubectl("get", resource).stdout.splitlines()
    assert table[0].split()[0] == "NAME"
    return [line.split()[0] for line in table[1:]]


@pytest.fixture(scope="module")
def installed(server: ServerProcess) -> list[str]:
    return _install(server)


def test_install_applies_every_catalog_object(installed: list[str]) -> None:
    # the session server may already hold some of them (another test applied the compat catalog)
    assert set(installed) <= set(ADDONS + FUNCTIONS)


def test_install_into_an_empty_server_writes_everything(fresh_server: ServerProcess) -> None:
    assert _install(fresh_server.start()) == ADDONS + FUNCTIONS


def test_kubectl_lists_the_addons_and_functions(server: ServerProcess, installed: list[str]) -> None:
    assert set(ADDONS) <= set(_names(server, "addons"))
    assert set(FUNCTIONS) <= set(_names(server, "functions"))
    # the short name KubeStash gives Function works too
    assert set(FUNCTIONS) <= set(_names(server, "fn"))


def test_stored_objects_are_the_catalog(server: ServerProcess, installed: list[str]) -> None:
    for obj in builtin_catalog():
        stored = json.loads(server.kubectl("get", f"{obj.kind.lower()}s", obj.name, "-o", "json").stdout)
        assert stored["spec"] == obj.to_wire()["spec"]
        assert "namespace" not in stored["metadata"]


def test_second_install_changes_nothing(server: ServerProcess, installed: list[str]) -> None:
    before = _versions(server)
    assert _install(server) == []
    assert _versions(server) == before


def test_install_takes_back_a_changed_field(server: ServerProcess, installed: list[str]) -> None:
    server.kubectl("patch", "function", "pvc-restore", "--type", "merge", "-p", '{"spec":{"image":"example/other:v1"}}')
    assert server.kubectl("get", "function", "pvc-restore", "-o", "jsonpath={.spec.image}").stdout == "example/other:v1"
    assert _install(server) == ["pvc-restore"]
    image = server.kubectl("get", "function", "pvc-restore", "-o", "jsonpath={.spec.image}").stdout
    assert image == "ghcr.io/kubestash/pvc:v0.28.0"


def test_catalog_passes_admission() -> None:
    for obj in builtin_catalog():
        result = review(obj.to_wire())
        assert result.allowed, f"{obj.kind}/{obj.name}: {result.errors}"
        assert admit(obj).to_wire()["spec"] == obj.to_wire()["spec"]
