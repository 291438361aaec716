"""Mapping a backup target's volumes to directories on this machine, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestash.executor.volumes import (
    POD_ORDINAL,
    PVC_NAME,
    ComponentVolumes,
    Mount,
    VolumeError,
    claim_path,
    components,
    host_path,
    host_paths,
    needed_claims,
    pv_host_path,
    pvc_component,
)


def workload(kind: str, name: str, pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"template": {"spec": pod_spec}, **spec},
    }


def deployment(tmp_path: Path) -> dict[str, Any]:
    return workload(
        "Deployment",
        "app",
        {
            "containers": [
                {
                    "name": "main",
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/source/data"},
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "logs", "mountPath": "/var/log/app", "subPath": "app", "readOnly": True},
                    ],
                },
                {"name": "sidecar", "volumeMounts": [{"name": "data", "mountPath": "/sidecar/data", "subPath": "sub"}]},
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
                {"name": "cache", "emptyDir": {}},
                {"name": "logs", "hostPath": {"path": str(tmp_path / "logs")}},
            ],
        },
    )


def test_deployment_maps_pvc_and_hostpath_and_records_emptydir(tmp_path: Path) -> None:
    obj = deployment(tmp_path)
    assert needed_claims("Deployment", obj) == ["data-pvc"]
    [comp] = components("Deployment", obj, {"data-pvc": tmp_path / "pv"})
    assert comp.name == "dump"
    assert comp.variables == {}
    assert set(comp.mounts) == {
        Mount("/source/data", tmp_path / "pv", "data", False),
        Mount("/var/log/app", tmp_path / "logs" / "app", "logs", True),
        Mount("/sidecar/data", tmp_path / "pv" / "sub", "data", False),
    }
    [cache] = comp.unmapped
    assert cache.mount_path == "/cache"
    assert "emptyDir" in cache.reason
    with pytest.raises(VolumeError, match=r"/cache/x of component dump is on volume cache: .*emptyDir"):
        host_path(comp, "/cache/x")


def test_statefulset_components_per_ordinal_with_claim_templates(tmp_path: Path) -> None:
    obj = workload(
        "StatefulSet",
        "db",
        {
            "containers": [
                {
                    "name": "db",
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/var/lib/db"},
                        {"name": "conf", "mountPath": "/etc/db"},
                    ],
                }
            ],
            "volumes": [{"name": "conf", "hostPath": {"path": str(tmp_path / "conf")}}],
        },
        replicas=2,
        volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {}}],
    )
    assert needed_claims("StatefulSet", obj) == ["data-db-0", "data-db-1"]
    claims: dict[str, Path | VolumeError] = {"data-db-0": tmp_path / "pv0", "data-db-1": tmp_path / "pv1"}
    comps = components("StatefulSet", obj, claims)
    assert [c.name for c in comps] == ["dump-pod-0", "dump-pod-1"]
    assert [dict(c.variables) for c in comps] == [{POD_ORDINAL: "0"}, {POD_ORDINAL: "1"}]
    for i, comp in enumerate(comps):
        assert Mount("/var/lib/db", tmp_path / f"pv{i}", "data", False) in comp.mounts
        assert Mount("/etc/db", tmp_path / "conf", "conf", False) in comp.mounts


def test_statefulset_replicas_default_to_one() -> None:
    obj = workload("StatefulSet", "db", {"containers": []}, volumeClaimTemplates=[{"metadata": {"name": "d"}}])
    assert needed_claims("StatefulSet", obj) == ["d-db-0"]
    assert [c.name for c in components("StatefulSet", obj, {})] == ["dump-pod-0"]


def test_daemonset_component_is_named_after_the_one_node() -> None:
    [comp] = components("DaemonSet", workload("DaemonSet", "agent", {"containers": []}), {})
    assert comp.name == "dump-localhost"


def test_pvc_target_is_mounted_at_kubestash_data(tmp_path: Path) -> None:
    comp = pvc_component("my-pvc", tmp_path)
    assert comp.name == "dump"
    assert comp.variables == {PVC_NAME: "my-pvc"}
    (tmp_path / "a").mkdir()
    assert host_paths(comp, ["/kubestash-data", "/kubestash-data/a"]) == [tmp_path, tmp_path / "a"]


def test_claim_resolution_errors_name_the_object_and_reason() -> None:
    with pytest.raises(VolumeError, match="PersistentVolumeClaim demo/missing not found"):
        claim_path(None, None, "demo", "missing")
    unbound = {"metadata": {"name": "p", "namespace": "demo"}, "spec": {}, "status": {"phase": "Pending"}}
    with pytest.raises(VolumeError, match=r"PersistentVolumeClaim demo/p is not bound .*phase Pending"):
        claim_path(unbound, None, "demo", "p")
    bound = {"metadata": {"name": "p", "namespace": "demo"}, "spec": {"volumeName": "pv-1"}}
    with pytest.raises(VolumeError, match="PersistentVolume pv-1, bound to PersistentVolumeClaim demo/p, not found"):
        claim_path(bound, None, "demo", "p")
    nfs = {"metadata": {"name": "pv-1"}, "spec": {"capacity": {"storage": "1Gi"}, "nfs": {"server": "x", "path": "/"}}}
    with pytest.raises(VolumeError, match="PersistentVolume pv-1 has a nfs source"):
        claim_path(bound, nfs, "demo", "p")
    assert pv_host_path({"metadata": {"name": "l"}, "spec": {"local": {"path": "/mnt/l"}}}) == Path("/mnt/l")


def test_unbound_claim_of_a_workload_fails_only_for_paths_under_it(tmp_path: Path) -> None:
    obj = deployment(tmp_path)
    (tmp_path / "logs" / "app").mkdir(parents=True)
    unbound = VolumeError("PersistentVolumeClaim demo/data-pvc is not bound to a PersistentVolume")
    [comp] = components("Deployment", obj, {"data-pvc": unbound})
    assert host_paths(comp, ["/var/log/app"]) == [tmp_path / "logs" / "app"]
    with pytest.raises(VolumeError, match="on volume data: PersistentVolumeClaim demo/data-pvc is not bound"):
        host_paths(comp, ["/source/data"])


def test_path_not_under_any_mount_lists_the_mounts(tmp_path: Path) -> None:
    comp = ComponentVolumes("dump", (Mount("/source/data", tmp_path, "data"),))
    with pytest.raises(VolumeError, match=r"path /etc is not under .* component dump; mounts: /source/data \(data\)"):
        host_paths(comp, ["/etc"])
    with pytest.raises(VolumeError, match="not under"):
        host_paths(comp, ["/source/database"])


def test_longest_mount_path_wins_and_missing_directories_fail(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "x").mkdir(parents=True)
    (inner / "y").mkdir(parents=True)
    comp = ComponentVolumes("dump", (Mount("/data", outer, "outer"), Mount("/data/nested", inner, "inner")))
    assert host_paths(comp, ["/data/x", "/data/nested/y", "/data/nested/../x"]) == [
        outer / "x",
        inner / "y",
        outer / "x",
    ]
    with pytest.raises(VolumeError, match=r"/data/nested/z of component dump is .*/inner/z .* does not exist"):
        host_paths(comp, ["/data/nested/z"])


def test_unsupported_kind() -> None:
    with pytest.raises(VolumeError, match="cannot back up a ReplicaSet"):
        components("ReplicaSet", workload("ReplicaSet", "r", {}), {})
