"""Resolving a session's Addon task into parameters and Function args, against KubeStash's own manifests.

Sessions come from the KubeStash docs examples of the compat corpus; Addons and Functions from the built-in
catalog, which must equal KubeStash's catalog manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from compat_corpus import COMPAT_ROOT
from kubestash.api.addons import Addon, Function
from kubestash.api.backup import BackupConfiguration
from kubestash.api.restore import RestoreSession
from kubestash.api.shared import TaskReference
from kubestash.tasks.catalog import CATALOG_FILES, builtin_catalog
from kubestash.tasks.resolve import ResolvedTask, TaskError, component_volumes, parse_args, resolve_task

DOCS = COMPAT_ROOT / "kubestash-docs" / "guides"
WORKLOAD_BC = DOCS / "workloads" / "deployment" / "examples" / "backupconfiguration.yaml"
WORKLOAD_RS = DOCS / "workloads" / "deployment" / "examples" / "restoresession.yaml"
PVC_BC = DOCS / "volumes" / "pvc" / "examples" / "backupconfiguration.yaml"
PVC_RS = DOCS / "volumes" / "pvc" / "examples" / "restoresession.yaml"
CATALOG = {obj.name: obj for obj in builtin_catalog()}
BACKUP_VARS = {
    "namespace": "demo",
    "backupSession": "sample-backup-dep-1700000000",
    "invokerKind": "BackupConfiguration",
}
RESTORE_VARS = {"namespace": "demo", "restoreSession": "sample-restore", "snapshot": "gcs-demo-repo-snap-1"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _addon(name: str) -> Addon:
    obj = CATALOG[name]
    assert isinstance(obj, Addon)
    return obj


def _function(name: str) -> Function:
    obj = CATALOG[name]
    assert isinstance(obj, Function)
    return obj


def _backup_task(path: Path) -> tuple[str, TaskReference]:
    bc = BackupConfiguration.model_validate(_load(path))
    addon = (bc.spec.sessions or [])[0].addon
    assert addon is not None and addon.tasks
    return addon.name, addon.tasks[0]


def _restore_task(path: Path) -> tuple[str, TaskReference]:
    rs = RestoreSession.model_validate(_load(path))
    addon = rs.spec.addon
    assert addon is not None and addon.tasks
    return addon.name, addon.tasks[0]


def _resolve(addon: str, function: str, task: TaskReference, kind: str = "backup") -> ResolvedTask:
    variables = BACKUP_VARS if kind == "backup" else RESTORE_VARS
    return resolve_task(_addon(addon), _function(function), task, kind, variables)  # type: ignore[arg-type]


def test_catalog_is_kubestash_catalog_verbatim() -> None:
    for file in CATALOG_FILES:
        data = _load(COMPAT_ROOT / "kubestash-catalog" / file)
        assert CATALOG[data["metadata"]["name"]].to_wire() == data


def test_workload_logical_backup_from_docs_example() -> None:
    addon, task = _backup_task(WORKLOAD_BC)
    assert (addon, task.name) == ("workload-addon", "logical-backup")
    resolved = _resolve(addon, "workload-backup", task)
    assert dict(resolved.parameters) == {
        "paths": "/source/data",
        "exclude": "/source/data/lost+found",
        "enableCache": "true",
        "scratchDir": "/kubestash-tmp",
    }
    assert resolved.args == (
        "backup",
        "--namespace=demo",
        "--backupsession=sample-backup-dep-1700000000",
        "--enable-cache=true",
        "--scratch-dir=/kubestash-tmp",
        "--paths=/source/data",
        "--exclude=/source/data/lost+found",
    )
    assert (resolved.function, resolved.driver, resolved.singleton) == ("workload-backup", "Restic", False)
    assert (resolved.kind, resolved.addon, resolved.image) == ("backup", addon, "ghcr.io/kubestash/workload:v0.28.0")
    assert [v.name for v in resolved.volume_templates] == ["kubestash-tmp-volume"]
    assert [(m.name, m.mount_path) for m in resolved.volume_mounts] == [("kubestash-tmp-volume", "/kubestash-tmp")]


def test_pvc_logical_backup_from_docs_example_uses_defaults() -> None:
    addon, task = _backup_task(PVC_BC)
    assert (addon, task.name, task.params) == ("pvc-addon", "logical-backup", None)
    resolved = _resolve(addon, "pvc-backup", task)
    assert dict(resolved.parameters) == {
        "paths": "/kubestash-data",
        "enableCache": "true",
        "scratchDir": "/kubestash-tmp",
    }
    assert parse_args(resolved.args) == {
        "": "backup",
        "namespace": "demo",
        "backupsession": "sample-backup-dep-1700000000",
        "enable-cache": "true",
        "scratch-dir": "/kubestash-tmp",
        "exclude": "",
        "paths": "/kubestash-data",
    }
    assert resolved.singleton is True


def test_pvc_volume_templates_are_expanded_per_component() -> None:
    _, task = _backup_task(PVC_BC)
    resolved = _resolve("pvc-addon", "pvc-backup", task)
    volumes = component_volumes(resolved, {"PVC_NAME": "nfs-pvc"})
    assert [v.to_wire() for v in volumes] == [
        {"name": "kubestash-data-volume", "source": {"persistentVolumeClaim": {"claimName": "nfs-pvc"}}},
        {
            "name": "kubestash-tmp-volume",
            "usage": "Holds temporary files and restic cache.",
            "source": {"emptyDir": {}},
        },
    ]
    # the task itself keeps the template, so each component gets its own claim
    assert resolved.volume_templates[0].to_wire()["source"]["persistentVolumeClaim"]["claimName"] == "${PVC_NAME}"
    with pytest.raises(TaskError, match="task logical-backup: volume kubestash-data-volume: variable PVC_NAME"):
        component_volumes(resolved, {})


def test_workload_restore_from_docs_example() -> None:
    addon, task = _restore_task(WORKLOAD_RS)
    assert (addon, task.name) == ("workload-addon", "logical-backup-restore")
    resolved = _resolve(addon, "workload-restore", task, "restore")
    assert resolved.args == (
        "restore",
        "--namespace=demo",
        "--restoresession=sample-restore",
        "--snapshot=gcs-demo-repo-snap-1",
        "--enable-cache=true",
        "--scratch-dir=/kubestash-tmp",
        "--exclude=",
        "--include=",
    )
    assert resolved.kind == "restore"


def test_pvc_restore_from_docs_example() -> None:
    addon, task = _restore_task(PVC_RS)
    resolved = _resolve(addon, "pvc-restore", task, "restore")
    assert parse_args(resolved.args) == {
        "": "restore",
        "namespace": "demo",
        "restoresession": "sample-restore",
        "snapshot": "gcs-demo-repo-snap-1",
        "enable-cache": "true",
        "scratch-dir": "/kubestash-tmp",
    }
    assert component_volumes(resolved, {"PVC_NAME": "nfs-pvc"})[0].name == "kubestash-data-volume"


def test_restore_include_exclude_params() -> None:
    task = TaskReference(name="logical-backup-restore", params={"include": "/data/a,/data/b", "exclude": "*.log"})
    args = parse_args(_resolve("workload-addon", "workload-restore", task, "restore").args)
    assert (args["include"], args["exclude"]) == ("/data/a,/data/b", "*.log")


def test_missing_builtin_uses_function_default() -> None:
    task = TaskReference(name="logical-backup", params={"paths": "/data"})
    resolved = resolve_task(_addon("workload-addon"), _function("workload-backup"), task, "backup", {})
    assert parse_args(resolved.args)["namespace"] == "default"
    assert parse_args(resolved.args)["backupsession"] == ""


def test_given_params_override_defaults_and_builtins() -> None:
    task = TaskReference(name="logical-backup", params={"paths": "/d", "enableCache": "false", "scratchDir": "/tmp/x"})
    args = parse_args(_resolve("workload-addon", "workload-backup", task).args)
    assert (args["enable-cache"], args["scratch-dir"]) == ("false", "/tmp/x")
    variables = {**BACKUP_VARS, "enableCache": "true"}
    resolved = resolve_task(_addon("workload-addon"), _function("workload-backup"), task, "backup", variables)
    assert parse_args(resolved.args)["enable-cache"] == "false"


def test_declared_param_without_value_expands_empty_even_if_a_builtin_has_its_name() -> None:
    task = TaskReference(name="logical-backup", params={"paths": "/d"})
    variables = {**BACKUP_VARS, "exclude": "leaked"}
    resolved = resolve_task(_addon("workload-addon"), _function("workload-backup"), task, "backup", variables)
    assert parse_args(resolved.args)["exclude"] == ""
    assert "exclude" not in resolved.parameters


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/a,/b", "/a,/b"),
        (" /a , /b ", " /a , /b "),
        (["/a", "/b"], "/a,/b"),
        (True, "true"),
        (5, "5"),
        (None, ""),
    ],
)
def test_param_values_become_strings(value: object, expected: str) -> None:
    task = TaskReference(name="logical-backup", params={"paths": "/d", "exclude": value})
    assert _resolve("workload-addon", "workload-backup", task).parameters["exclude"] == expected


def test_object_param_value_is_rejected() -> None:
    task = TaskReference(name="logical-backup", params={"paths": {"a": "b"}})
    with pytest.raises(TaskError, match="task logical-backup: parameter paths must be a string, not dict"):
        _resolve("workload-addon", "workload-backup", task)


@pytest.mark.parametrize("params", [None, {}, {"exclude": "/x"}, {"paths": ""}, {"paths": None}])
def test_required_param_missing(params: dict[str, Any] | None) -> None:
    task = TaskReference(name="logical-backup", params=params)
    with pytest.raises(TaskError) as exc:
        _resolve("workload-addon", "workload-backup", task)
    assert str(exc.value) == "task logical-backup: parameter paths is required"


def test_unknown_task_lists_the_addon_tasks() -> None:
    with pytest.raises(TaskError) as exc:
        _resolve("workload-addon", "workload-backup", TaskReference(name="LogicalBackup"))
    assert str(exc.value) == (
        "Addon workload-addon has no backup task 'LogicalBackup' "
        "(it has: logical-backup, volume-snapshot, manifest-backup)"
    )


def test_backup_task_name_is_not_a_restore_task() -> None:
    with pytest.raises(
        TaskError, match=r"has no restore task 'logical-backup' \(it has: logical-backup-restore, manifest-restore\)"
    ):
        _resolve("workload-addon", "workload-restore", TaskReference(name="logical-backup"), "restore")


def test_empty_task_name() -> None:
    with pytest.raises(TaskError, match="must name the task"):
        _resolve("pvc-addon", "pvc-backup", TaskReference(name=""))


def test_undeclared_param_is_rejected_naming_it() -> None:
    task = TaskReference(name="logical-backup", params={"path": "/source/data", "paths": "/d"})
    with pytest.raises(TaskError) as exc:
        _resolve("workload-addon", "workload-backup", task)
    assert str(exc.value) == (
        "task logical-backup: unknown parameter path (the task declares: paths, exclude, enableCache, scratchDir)"
    )


def test_function_must_be_the_one_the_task_names() -> None:
    with pytest.raises(TaskError, match="runs it with Function pvc-backup, not workload-backup"):
        _resolve("pvc-addon", "workload-backup", TaskReference(name="logical-backup"))


def test_resolved_task_is_immutable() -> None:
    resolved = _resolve("pvc-addon", "pvc-backup", TaskReference(name="logical-backup"))
    with pytest.raises(TypeError):
        resolved.parameters["paths"] = "/x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["backup"], {"": "backup"}),
        (["backup", "--paths=/a,/b", "--exclude="], {"": "backup", "paths": "/a,/b", "exclude": ""}),
        (["--opt=a=b"], {"opt": "a=b"}),
        (["--force"], {"force": "true"}),
        (["-v=3"], {"v": "3"}),
        (["--x=1", "--x=2"], {"x": "2"}),
        (["--x=1", "restore"], {"x": "1", "": "restore"}),
    ],
)
def test_parse_args(args: list[str], expected: dict[str, str]) -> None:
    assert parse_args(args) == expected


@pytest.mark.parametrize(
    ("args", "message"), [(["backup", "extra"], "unexpected argument 'extra'"), (["--"], "no flag")]
)
def test_parse_args_rejects(args: list[str], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        parse_args(args)
