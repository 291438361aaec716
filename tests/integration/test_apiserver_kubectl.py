"""The bundled API server driven by the real kubectl, as a user would type it."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from apiserver_process import ServerProcess, kubectl_binary
from compat_corpus import COMPAT_ROOT

STORAGE = """
apiVersion: storage.kubestash.com/v1alpha1
kind: BackupStorage
metadata:
  name: s3-storage
  namespace: {ns}
spec:
  storage:
    provider: s3
    s3:
      bucket: kubestash-{ns}
      region: us-east-1
      prefix: demo/
      secretName: s3-secret
  usagePolicy:
    allowedNamespaces:
      from: All
  default: true
---
apiVersion: storage.kubestash.com/v1alpha1
kind: RetentionPolicy
metadata:
  name: keep-five
  namespace: {ns}
spec:
  maxRetentionPeriod: 2mo
  successfulSnapshots:
    last: 5
"""

BAD_BC = """
apiVersion: core.kubestash.com/v1alpha1
kind: BackupConfiguration
metadata:
  name: broken
  namespace: {ns}
spec:
  backends:
    - name: s3-backend
      storageRef: {{name: s3-storage, namespace: {ns}}}
      retentionPolicy: {{name: keep-five, namespace: {ns}}}
  sessions:
    - name: frequent
      scheduler:
        schedule: "*/5 * * *"
      repositories:
        - name: repo
          backend: s3-backend
          directory: /demo
      addon:
        name: workload-addon
        tasks: [{{name: logical-backup}}]
"""


def namespace(server: ServerProcess) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    return name


def test_api_resources_lists_every_kubestash_kind(server: ServerProcess) -> None:
    out = server.kubectl("api-resources", "--categories", "kubestash", "-o", "wide").stdout
    for plural in (
        "backupstorages",
        "repositories",
        "retentionpolicies",
        "snapshots",
        "backupconfigurations",
        "backupsessions",
        "restoresessions",
        "hooktemplates",
        "backupblueprints",
        "addons",
        "functions",
    ):
        assert plural in out, out
    repo_line = next(line for line in out.splitlines() if line.startswith("repositories"))
    assert "repo" in repo_line.split() and "storage.kubestash.com/v1alpha1" in repo_line
    core = server.kubectl("api-resources", "--api-group", "").stdout
    assert "persistentvolumeclaims" in core and "pvc" in core


def test_apply_get_describe_patch_label_delete(server: ServerProcess) -> None:
    ns = namespace(server)
    applied = server.kubectl("apply", "-f", "-", input=STORAGE.format(ns=ns)).stdout
    assert "backupstorage.storage.kubestash.com/s3-storage created" in applied
    stored = yaml.safe_load(server.kubectl("get", "backupstorage", "s3-storage", "-n", ns, "-o", "yaml").stdout)
    assert stored["spec"]["deletionPolicy"] == "Delete", "schema default applied"
    assert stored["spec"]["storage"]["s3"]["prefix"] == "demo", "admission trimmed the slash"
    assert stored["metadata"]["generation"] == 1 and stored["metadata"]["uid"]
    table = server.kubectl("get", "backupstorages", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "PROVIDER", "DEFAULT", "DELETION-POLICY", "TOTAL-SIZE", "PHASE", "AGE"]
    assert table[1].split()[:4] == ["s3-storage", "s3", "true", "Delete"]
    wide = server.kubectl("get", "backupstorages", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:2] == ["NAME", "PROVIDER"] and wide[1].startswith("s3-storage")
    as_json = json.loads(server.kubectl("get", "retentionpolicies", "-n", ns, "-o", "json").stdout)
    assert as_json["kind"] == "List" and as_json["items"][0]["spec"]["failedSnapshots"] == {"last": 1}
    described = server.kubectl("describe", "backupstorage", "s3-storage", "-n", ns).stdout
    assert "Provider:" in described and "s3" in described
    again = server.kubectl("apply", "-f", "-", input=STORAGE.format(ns=ns)).stdout
    assert "unchanged" in again
    server.kubectl(
        "patch",
        "retentionpolicy",
        "keep-five",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"spec":{"successfulSnapshots":{"last":7}}}',
    )
    server.kubectl("label", "retentionpolicy", "keep-five", "-n", ns, "tier=gold")
    patched = yaml.safe_load(server.kubectl("get", "retentionpolicy", "keep-five", "-n", ns, "-o", "yaml").stdout)
    assert patched["spec"]["successfulSnapshots"]["last"] == 7
    assert patched["metadata"]["generation"] == 2, "spec change bumps generation, a label does not"
    labelled = server.kubectl("get", "retentionpolicies", "-n", ns, "-l", "tier=gold", "-o", "name").stdout.split()
    assert labelled == ["retentionpolicy.storage.kubestash.com/keep-five"]
    server.kubectl("delete", "-f", "-", input=STORAGE.format(ns=ns))
    left = server.kubectl("get", "backupstorages,retentionpolicies", "-n", ns, "-o", "name").stdout
    assert left.strip() == ""


def test_admission_rejection_names_the_field(server: ServerProcess) -> None:
    ns = namespace(server)
    server.kubectl("apply", "-f", "-", input=STORAGE.format(ns=ns))
    result = server.kubectl("apply", "-f", "-", input=BAD_BC.format(ns=ns), check=False)
    assert result.returncode != 0
    assert 'The BackupConfiguration "broken" is invalid: spec.sessions[0].scheduler.schedule: Invalid value:' in (
        result.stderr
    )
    unknown = server.kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        input=STORAGE.format(ns=ns).replace("default: true", "default: true\n  colour: blue"),
    )
    assert unknown.returncode != 0 and 'unknown field "spec.colour"' in unknown.stderr


def test_unknown_kind_is_a_clear_error_until_its_crd_exists(server: ServerProcess) -> None:
    ns = namespace(server)
    mysql = f"apiVersion: kubedb.com/v1alpha2\nkind: MySQL\nmetadata: {{name: db, namespace: {ns}}}\nspec: {{}}\n"
    missing = server.kubectl("apply", "-f", "-", input=mysql, check=False)
    assert missing.returncode != 0
    assert 'no matches for kind "MySQL" in version "kubedb.com/v1alpha2"' in missing.stderr
    server.kubectl("apply", "-f", "-", input=_free_form_crd("kubedb.com", "v1alpha2", "MySQL", "mysqls"))
    server.kubectl("wait", "--for", "condition=Established", "crd/mysqls.kubedb.com", "--timeout", "10s")
    created = server.kubectl("apply", "-f", "-", input=mysql).stdout
    assert "mysql.kubedb.com/db created" in created
    assert server.kubectl("get", "mysqls", "-n", ns, "-o", "name").stdout.strip() == "mysql.kubedb.com/db"


def _free_form_crd(group: str, version: str, kind: str, plural: str) -> str:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    return yaml.safe_dump(crd)


def test_explain_our_kinds(server: ServerProcess) -> None:
    out = server.kubectl("explain", "backupstorage.spec.storage").stdout
    assert "provider" in out and "s3" in out
    assert "KIND:" in server.kubectl("explain", "restoresessions.spec.dataSource").stdout


def test_get_watch_streams_changes(server: ServerProcess) -> None:
    ns = namespace(server)
    proc = subprocess.Popen(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(server.kubeconfig),
            "--cache-dir",
            str(server.cache_dir),
            "get",
            "configmaps",
            "-n",
            ns,
            "-w",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        server.kubectl("create", "configmap", "watched", "-n", ns, "--from-literal=a=b")
        server.kubectl("delete", "configmap", "watched", "-n", ns)
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines() if "watched" in line]
    assert [line[0] for line in lines] == ["ADDED", "DELETED"], out + err


def test_server_side_apply_conflicts_and_force(server: ServerProcess) -> None:
    ns = namespace(server)
    first = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, namespace: {ns}}}\ndata: {{mode: fast}}\n"
    server.kubectl("apply", "--server-side", "--field-manager", "alice", "-f", "-", input=first)
    clash = server.kubectl(
        "apply", "--server-side", "--field-manager", "bob", "-f", "-", input=first.replace("fast", "slow"), check=False
    )
    assert clash.returncode != 0 and "conflict" in clash.stderr.lower() and "alice" in clash.stderr
    server.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "bob",
        "--force-conflicts",
        "-f",
        "-",
        input=first.replace("fast", "slow"),
    )
    data = json.loads(server.kubectl("get", "cm", "shared", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    assert data["data"] == {"mode": "slow"}
    assert {m["manager"] for m in data["metadata"]["managedFields"]} >= {"bob"}


def test_compat_doc_folders_apply(server: ServerProcess, tmp_path: Path) -> None:
    """Every docs example folder applies with `kubectl apply -f`, KubeDB kinds once their CRD exists.

    The folders all use the namespaces demo, demo-a, demo-b and verify, so each folder is applied
    into freshly created namespaces that are deleted (cascading to their objects) afterwards.
    KubeStash's s3 backend guide keeps two alternative default storages side by side; applied
    together they are rightly rejected ("multiple default BackupStorages"), so a folder that fails
    only with that is applied file by file.
    """
    server.kubectl("apply", "-f", "-", input=_free_form_crd("kubedb.com", "v1alpha2", "MySQL", "mysqls"))
    namespaces = ["demo", "demo-a", "demo-b", "verify"]
    folders = sorted({p.parent for p in (COMPAT_ROOT / "kubestash-docs").rglob("*.yaml")})

    def clean(folder: Path) -> None:
        # Samples copied from a live cluster carry the operator's finalizers; with no operator
        # running they would (correctly) keep their namespace terminating forever.
        for file in sorted(folder.glob("*.yaml")):
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and (doc.get("metadata") or {}).get("finalizers"):
                    meta = doc["metadata"]
                    kind = f"{doc['kind'].lower()}.{doc['apiVersion'].split('/')[0]}"
                    server.kubectl(
                        "patch",
                        kind,
                        meta["name"],
                        "-n",
                        meta.get("namespace", "default"),
                        "--type",
                        "merge",
                        "-p",
                        '{"metadata":{"finalizers":null}}',
                        check=False,
                    )
        server.kubectl("delete", "namespace", *namespaces, "--wait=true", "--timeout=30s")

    assert len(folders) >= 10
    namespaces = ["demo", "demo-a", "demo-b", "verify"]
    for folder in folders:
        for ns in namespaces:
            server.kubectl("create", "namespace", ns)
        result = server.kubectl("apply", "-f", str(folder), check=False)
        if result.returncode != 0:
            assert "multiple default BackupStorages" in result.stderr, f"{folder}:\n{result.stderr}"
            for file in sorted(folder.glob("*.yaml")):
                clean(folder)
                for ns in namespaces:
                    server.kubectl("create", "namespace", ns)
                server.kubectl("apply", "-f", str(file))
        clean(folder)
    assert server.kubectl("get", "namespace", "demo", check=False).returncode != 0


@pytest.mark.parametrize("kind", ["backupconfigurations", "restoresessions", "backupsessions"])
def test_empty_lists_print_no_resources(server: ServerProcess, kind: str) -> None:
    ns = namespace(server)
    result = server.kubectl("get", kind, "-n", ns)
    assert f"No resources found in {ns} namespace." in result.stderr
