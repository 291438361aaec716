"""``kubestash crds | kubectl apply --dry-run=client -f -`` succeeds, then the CRDs install for real.

The target is the bundled API server started without KubeStash's CRDs, i.e. an empty cluster.

kubectl cannot run even a client-side dry run offline: it discovers the
``apiextensions.k8s.io/v1`` REST mapping, asks the server's OpenAPI v3 document
whether it validates fields itself, and GETs each object to decide between
"created" and "configured". Validation stays on (no ``--validate=false``).
Structural-schema checks of the CRDs themselves live in ``tests/unit/test_crds.py``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiserver_process import BIN, ServerProcess, kubectl_binary
from kubestash.api.registry import KINDS


@pytest.fixture
def empty_cluster(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, cache_dir=tmp_path / "cache", extra_args=("--without-kubestash-crds",))
    yield server.start()
    server.stop()


def test_kubectl_apply_dry_run_accepts_generated_crds(empty_cluster: ServerProcess) -> None:
    server = empty_cluster
    kubectl = [kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(server.cache_dir)]
    crds = shlex.quote(str(BIN / "kubestash"))
    pipeline = f"set -o pipefail; {crds} crds | {shlex.join(kubectl)} apply --dry-run=client -f -"
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert len(lines) == len(KINDS)
    for info in KINDS:
        assert f"customresourcedefinition.apiextensions.k8s.io/{info.crd_name} created (dry run)" in lines
    assert server.kubectl("get", "backupstorages", check=False).returncode != 0, "a dry run installs nothing"

    crds_yaml = subprocess.run([str(BIN / "kubestash"), "crds"], capture_output=True, text=True, check=True).stdout
    server.kubectl("apply", "-f", "-", input=crds_yaml)
    for info in KINDS:
        server.kubectl("wait", "--for", "condition=Established", f"crd/{info.crd_name}", "--timeout", "10s")
