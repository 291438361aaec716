"""resolve_target against the bundled API server: real PV/PVC/workload objects, tmp dirs as hostPath."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Namespace, PersistentVolume, PersistentVolumeClaim

from apiserver_process import ServerProcess
from kubestash.api.shared import TypedObjectReference
from kubestash.executor.volumes import ComponentVolumes, Mount, VolumeError, host_paths, resolve_target


@pytest.fixture
def kube(server: ServerProcess) -> Client:
    return Client(config=KubeConfig.from_file(str(server.kubeconfig)))


@pytest.fixture
def ns(kube: Client) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name


def resolve(server: ServerProcess, kind: str, ns: str, name: str, group: str = "apps") -> list[ComponentVolumes]:
    async def run() -> list[ComponentVolumes]:
        client = AsyncClient(config=KubeConfig.from_file(str(server.kubeconfig)))
        try:
            ref = TypedObjectReference(apiGroup=group, kind=kind, namespace=ns, name=name)
            return await resolve_target(client, ref)
        finally:
            await client.close()

    return asyncio.run(run())


def make_claim(kube: Client, ns: str, claim: str, directory: Path | None, source: str = "hostPath") -> None:
    """A PVC bound to a PV of its own (``directory`` None: left unbound)."""
    spec: dict[str, object] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    if directory is not None:
        pv = f"pv-{ns}-{claim}"
        volume = {"path": str(directory)} if source in ("hostPath", "local") else {"server": "nfs.example", "path": "/"}
        kube.create(
            PersistentVolume.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": pv},
                    "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], source: volume},
                }
            )
        )
        spec["volumeName"] = pv
    kube.create(
        PersistentVolumeClaim.from_dict(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": ns},
                "spec": spec,
            }
        )
    )


def pod_template(mounts: list[dict[str, object]], volumes: list[dict[str, object]]) -> dict[str, object]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": mounts}], "volumes": volumes},
    }


def test_deployment_volumes_map_to_pv_and_host_directories(
    server: ServerProcess, kube: Client, ns: str, tmp_path: Path
) -> None:
    (tmp_path / "pv" / "sub").mkdir(parents=True)
    (tmp_path / "host").mkdir()
    make_claim(kube, ns, "data", tmp_path / "pv")
    make_claim(kube, ns, "pending", None)
    template = pod_template(
        [
            {"name": "data", "mountPath": "/source/data", "subPath": "sub"},
            {"name": "host", "mountPath": "/host", "readOnly": True},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "pending", "mountPath": "/pending"},
        ],
        [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "host", "hostPath": {"path": str(tmp_path / "host")}},
            {"name": "cache", "emptyDir": {}},
            {"name": "pending", "persistentVolumeClaim": {"claimName": "pending"}},
        ],
    )
    kube.create(
        Deployment.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "app", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template},
            }
        )
    )
    [comp] = resolve(server, "Deployment", ns, "app")
    assert comp.name == "dump"
    assert set(comp.mounts) == {
        Mount("/source/data", tmp_path / "pv" / "sub", "data", False),
        Mount("/host", tmp_path / "host", "host", True),
    }
    assert host_paths(comp, ["/source/data", "/host"]) == [tmp_path / "pv" / "sub", tmp_path / "host"]
    with pytest.raises(VolumeError, match=f"PersistentVolumeClaim {ns}/pending is not bound"):
        host_paths(comp, ["/pending/x"])
    with pytest.raises(VolumeError, match="emptyDir"):
        host_paths(comp, ["/cache"])


def test_statefulset_claim_templates_per_ordinal(server: ServerProcess, kube: Client, ns: str, tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"pv{i}").mkdir()
        make_claim(kube, ns, f"data-db-{i}", tmp_path / f"pv{i}", source="local")
    kube.create(
        StatefulSet.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "serviceName": "db",
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": pod_template([{"name": "data", "mountPath": "/var/lib/db"}], []),
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        }
                    ],
                },
            }
        )
    )
    comps = resolve(server, "StatefulSet", ns, "db")
    assert [(c.name, dict(c.variables)) for c in comps] == [
        ("dump-pod-0", {"POD_ORDINAL": "0"}),
        ("dump-pod-1", {"POD_ORDINAL": "1"}),
    ]
    assert [host_paths(c, ["/var/lib/db"]) for c in comps] == [[tmp_path / "pv0"], [tmp_path / "pv1"]]


def test_pvc_target_and_its_errors(server: ServerProcess, kube: Client, ns: str, tmp_path: Path) -> None:
    make_claim(kube, ns, "good", tmp_path)
    make_claim(kube, ns, "unbound", None)
    make_claim(kube, ns, "remote", tmp_path, source="nfs")
    [comp] = resolve(server, "PersistentVolumeClaim", ns, "good", group="")
    assert comp.name == "dump"
    assert comp.variables == {"PVC_NAME": "good"}
    assert comp.mounts == (Mount("/kubestash-data", tmp_path, "kubestash-data-volume", False),)
    with pytest.raises(VolumeError, match=f"PersistentVolumeClaim {ns}/unbound is not bound"):
        resolve(server, "PersistentVolumeClaim", ns, "unbound", group="")
    with pytest.raises(VolumeError, match=f"PersistentVolume pv-{ns}-remote has a nfs source"):
        resolve(server, "PersistentVolumeClaim", ns, "remote", group="")
    with pytest.raises(VolumeError, match=f"PersistentVolumeClaim {ns}/nope not found"):
        resolve(server, "PersistentVolumeClaim", ns, "nope", group="")
    with pytest.raises(VolumeError, match=f"backup target Deployment {ns}/nope not found"):
        resolve(server, "Deployment", ns, "nope")
