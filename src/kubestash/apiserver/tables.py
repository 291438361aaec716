"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for.

kubectl does not know KubeStash's columns (or Pods'); it sends
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints whatever
columns and cells the server returns. So the server does what kube-apiserver
does:

* custom kinds get ``Name`` plus the CRD's ``additionalPrinterColumns`` (or
  ``Age`` when it declares none); each column's ``jsonPath`` is evaluated
  against the object and the value is typed by the column ``type``;
* ``date`` cells are turned into a human age (``5m``, ``3h``, ``2d``) **by the
  server** -- kubectl prints cells as it receives them, so a timestamp sent
  as-is would show up raw;
* a cell with no value is ``null``, which kubectl prints as an empty cell;
* built-in kinds get a few hand-picked columns (Pod's Ready/Status/Restarts,
  a PVC's Volume and Capacity, ...); the rest show Name and Age;
* each row carries the object -- only its metadata by default
  (``PartialObjectMetadata``), since ``--show-labels`` and ``-L`` read labels
  from there.

Watches send one Table per event; kubectl remembers the column definitions of
the first table and accepts later events without them, which
:func:`table_event` allows with ``with_columns=False``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubestash.apiserver.resources import ResourceType

IncludeObject = Literal["None", "Metadata", "Object"]
Cell = str | int | float | bool | None

TABLE_API_VERSION = "meta.k8s.io/v1"

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may "
    "allow a client to request the generation of an appropriate name automatically."
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created, shown as an age."
)


# --------------------------------------------------------------------------- ages
def human_duration(seconds: float) -> str:
    """An age the way kubectl and kube-apiserver print it: ``45s``, ``3m20s``, ``5h12m``, ``3d4h``, ``2y``."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = divmod(hours // 24, 365)
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def parse_timestamp(value: str) -> datetime | None:
    """An RFC 3339 timestamp (``2024-01-02T03:04:05Z``, fractions and offsets allowed), or None."""
    text = value.strip()
    if not text:
        return None
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def age(timestamp: Any, now: datetime) -> str | None:
    """The cell of a ``date`` column: an age, ``<invalid>`` for a malformed timestamp, None when absent."""
    if not isinstance(timestamp, str):
        return None
    parsed = parse_timestamp(timestamp)
    if parsed is None:
        return "<invalid>"
    return human_duration((now - parsed).total_seconds())


# --------------------------------------------------------------------------- JSONPath
_MISSING = object()
_STEP = re.compile(
    r"""
    \.(?P<field>(?:\\.|[^.\[\\])+)            # .field, with \. for a dot inside a key
  | \[\s*(?P<quoted>'[^']*'|"[^"]*")\s*\]      # ['key.with.dots']
  | \[\s*(?P<index>-?\d+)\s*\]                 # [0], [-1]
  | \[\s*\*\s*\]                               # [*]
  | \[\s*\?\(\s*@(?P<fpath>(?:\.[\w-]+)+)\s*(?P<op>==|!=)\s*(?P<lit>'[^']*'|"[^"]*"|[^)\s]+)\s*\)\s*\]
    """,
    re.VERBOSE,
)


class JsonPathError(ValueError):
    """A printer-column jsonPath this evaluator does not understand."""


def _steps(expression: str) -> list[tuple[str, Any]]:
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise JsonPathError(f"unsupported JSONPath {expression!r} at {text[pos:]!r}")
        if match.group("field") is not None:
            steps.append(("key", match.group("field").replace("\\.", ".")))
        elif match.group("quoted") is not None:
            steps.append(("key", match.group("quoted")[1:-1]))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        elif match.group("fpath") is not None:
            literal = match.group("lit")
            value: Any = literal[1:-1] if literal[0] in "'\"" else json.loads(literal)
            steps.append(("filter", (match.group("fpath")[1:].split("."), match.group("op"), value)))
        else:
            steps.append(("all", None))
        pos = match.end()
    return steps


def _lookup(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def evaluate(expression: str, obj: Any) -> list[Any]:
    """Every value ``expression`` selects in ``obj``: ``.a.b``, ``.a[0].b``, ``.a[*].b``, ``.a[?(@.type=="X")].b``."""
    current = [obj]
    for kind, arg in _steps(expression):
        found: list[Any] = []
        for value in current:
            if kind == "key":
                if isinstance(value, Mapping) and arg in value:
                    found.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    found.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, Mapping):
                    found.extend(value.values())
            elif isinstance(value, list):
                keys, op, literal = arg
                for item in value:
                    got = _lookup(item, keys)
                    if got is not _MISSING and (got == literal) == (op == "=="):
                        found.append(item)
        current = found
    return current


# --------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Column:
    """A table column: from a jsonPath (CRD printer columns) or computed (built-in kinds)."""

    name: str
    type: str = "string"
    json_path: str = ""
    description: str = ""
    priority: int = 0
    format: str = ""
    compute: Callable[[Mapping[str, Any], datetime], Cell] | None = None

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }

    def cell(self, obj: Mapping[str, Any], now: datetime) -> Cell:
        if self.compute is not None:
            return self.compute(obj, now)
        try:
            values = evaluate(self.json_path, obj)
        except JsonPathError:
            return None
        values = [v for v in values if v is not None]
        if not values:
            return None
        if self.type == "string":
            return ",".join(_text(v) for v in values)
        return _typed(self.type, values[0], now)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _typed(column_type: str, value: Any, now: datetime) -> Cell:
    """A jsonPath result as a typed cell; a value of the wrong type gives an empty cell, as in kube-apiserver."""
    if column_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date":
        return age(value, now)
    return None


NAME = Column("Name", "string", ".metadata.name", _NAME_DESCRIPTION, format="name")
AGE = Column("Age", "date", ".metadata.creationTimestamp", _AGE_DESCRIPTION)


def _path(name: str, json_path: str, column_type: str = "string", priority: int = 0, description: str = "") -> Column:
    return Column(name, column_type, json_path, description or f"Value of {json_path}.", priority)


def _computed(
    name: str,
    compute: Callable[[Mapping[str, Any], datetime], Cell],
    description: str,
    column_type: str = "string",
    priority: int = 0,
) -> Column:
    return Column(name, column_type, "", description, priority, compute=compute)


def _get(obj: Mapping[str, Any], *keys: str) -> Any:
    value = _lookup(obj, keys)
    return None if value is _MISSING else value


def _pod_ready(obj: Mapping[str, Any], _now: datetime) -> Cell:
    statuses = _get(obj, "status", "containerStatuses") or []
    containers = _get(obj, "spec", "containers") or []
    ready = sum(1 for s in statuses if isinstance(s, Mapping) and s.get("ready") is True)
    return f"{ready}/{len(containers)}"


def _pod_status(obj: Mapping[str, Any], _now: datetime) -> Cell:
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    reason = _get(obj, "status", "reason") or _get(obj, "status", "phase") or "Pending"
    for status in _get(obj, "status", "containerStatuses") or []:
        state = status.get("state") if isinstance(status, Mapping) else None
        if not isinstance(state, Mapping):
            continue
        waiting = _lookup(state, ("waiting", "reason"))
        terminated = _lookup(state, ("terminated", "reason"))
        if isinstance(waiting, str) and waiting:
            return waiting
        if isinstance(terminated, str) and terminated and reason != "Succeeded":
            reason = terminated
    return str(reason)


def _pod_restarts(obj: Mapping[str, Any], _now: datetime) -> Cell:
    statuses = _get(obj, "status", "containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses if isinstance(s, Mapping))


_ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}


def _access_modes(*where: str) -> Callable[[Mapping[str, Any], datetime], Cell]:
    def compute(obj: Mapping[str, Any], _now: datetime) -> Cell:
        modes = _get(obj, *where) or []
        return ",".join(_ACCESS_MODES.get(str(m), str(m)) for m in modes)

    return compute


def _claim(obj: Mapping[str, Any], _now: datetime) -> Cell:
    ref = _get(obj, "spec", "claimRef")
    if not isinstance(ref, Mapping):
        return ""
    return f"{ref.get('namespace', '')}/{ref.get('name', '')}"


def _ratio(numerator: Sequence[str], denominator: Sequence[str], default: int = 0) -> Callable[..., Cell]:
    def compute(obj: Mapping[str, Any], _now: datetime) -> Cell:
        top = _get(obj, *numerator) or 0
        bottom = _get(obj, *denominator)
        return f"{top}/{default if bottom is None else bottom}"

    return compute


def _count(*keys: str, extra: Sequence[str] = ()) -> Callable[..., Cell]:
    def compute(obj: Mapping[str, Any], _now: datetime) -> Cell:
        total = 0
        for key in (keys, extra):
            value = _get(obj, *key) if key else None
            if isinstance(value, Mapping | list):
                total += len(value)
        return total

    return compute


def _job_status(obj: Mapping[str, Any], _now: datetime) -> Cell:
    for condition in _get(obj, "status", "conditions") or []:
        if isinstance(condition, Mapping) and condition.get("status") == "True":
            if condition.get("type") == "Complete":
                return "Complete"
            if condition.get("type") == "Failed":
                return "Failed"
            if condition.get("type") == "Suspended":
                return "Suspended"
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_duration(obj: Mapping[str, Any], now: datetime) -> Cell:
    start = parse_timestamp(str(_get(obj, "status", "startTime") or ""))
    if start is None:
        return ""
    end = parse_timestamp(str(_get(obj, "status", "completionTime") or "")) or now
    return human_duration((end - start).total_seconds())


def _created_at(obj: Mapping[str, Any], _now: datetime) -> Cell:
    value = _get(obj, "metadata", "creationTimestamp")
    return value if isinstance(value, str) else None


def _role_ref(obj: Mapping[str, Any], _now: datetime) -> Cell:
    ref = obj.get("roleRef")
    return f"{ref.get('kind', '')}/{ref.get('name', '')}" if isinstance(ref, Mapping) else ""


def _involved(obj: Mapping[str, Any], _now: datetime) -> Cell:
    ref = obj.get("involvedObject") or obj.get("regarding")
    if not isinstance(ref, Mapping):
        return ""
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _last_seen(obj: Mapping[str, Any], now: datetime) -> Cell:
    for key in ("lastTimestamp", "eventTime", "deprecatedLastTimestamp"):
        if obj.get(key):
            return age(obj[key], now)
    return age(_get(obj, "metadata", "creationTimestamp"), now)


_CREATED_AT = _computed("Created At", _created_at, "When the object was created (RFC 3339).", "date")
_READY_REPLICAS = _ratio(("status", "readyReplicas"), ("spec", "replicas"), 1)

_BUILTIN_COLUMNS: dict[tuple[str, str], tuple[Column, ...]] = {
    ("", "Namespace"): (_path("Status", ".status.phase", description="Phase of the namespace."), AGE),
    ("", "Pod"): (
        _computed("Ready", _pod_ready, "Ready containers out of all containers."),
        _computed("Status", _pod_status, "Phase of the pod, or why it is not running."),
        _computed("Restarts", _pod_restarts, "Container restarts.", "integer"),
        AGE,
        _path("IP", ".status.podIP", priority=1, description="IP address of the pod."),
        _path("Node", ".spec.nodeName", priority=1, description="Node the pod runs on."),
    ),
    ("", "PersistentVolumeClaim"): (
        _path("Status", ".status.phase", description="Phase of the claim."),
        _path("Volume", ".spec.volumeName", description="The bound PersistentVolume."),
        _path("Capacity", ".status.capacity.storage", description="Capacity of the bound volume."),
        _computed("Access Modes", _access_modes("status", "accessModes"), "Access modes of the bound volume."),
        _path("StorageClass", ".spec.storageClassName", description="Storage class of the claim."),
        AGE,
        _path("VolumeMode", ".spec.volumeMode", priority=1, description="Filesystem or Block."),
    ),
    ("", "PersistentVolume"): (
        _path("Capacity", ".spec.capacity.storage", description="Capacity of the volume."),
        _computed("Access Modes", _access_modes("spec", "accessModes"), "Access modes of the volume."),
        _path("Reclaim Policy", ".spec.persistentVolumeReclaimPolicy", description="What happens on release."),
        _path("Status", ".status.phase", description="Phase of the volume."),
        _computed("Claim", _claim, "The claim bound to this volume."),
        _path("StorageClass", ".spec.storageClassName", description="Storage class of the volume."),
        _path("Reason", ".status.reason", description="Why the volume is in its phase."),
        AGE,
    ),
    ("", "Secret"): (
        _path("Type", ".type", description="Type of the secret."),
        _computed("Data", _count("data"), "Number of data items.", "integer"),
        AGE,
    ),
    ("", "ConfigMap"): (
        _computed("Data", _count("data", extra=("binaryData",)), "Number of data items.", "integer"),
        AGE,
    ),
    ("", "Service"): (
        _path("Type", ".spec.type", description="Type of the service."),
        _path("Cluster-IP", ".spec.clusterIP", description="Cluster IP of the service."),
        _path("Port(s)", ".spec.ports[*].port", description="Ports the service exposes."),
        AGE,
    ),
    ("", "Event"): (
        _computed("Last Seen", _last_seen, "Time since the event was last seen.", "date"),
        _path("Type", ".type", description="Normal or Warning."),
        _path("Reason", ".reason", description="Short reason of the event."),
        _computed("Object", _involved, "The object the event is about."),
        _path("Message", ".message", description="Message of the event."),
    ),
    ("apps", "Deployment"): (
        _computed("Ready", _READY_REPLICAS, "Ready replicas out of desired replicas."),
        _path("Up-to-date", ".status.updatedReplicas", "integer", description="Replicas with the latest template."),
        _path("Available", ".status.availableReplicas", "integer", description="Available replicas."),
        AGE,
    ),
    ("apps", "StatefulSet"): (_computed("Ready", _READY_REPLICAS, "Ready replicas out of desired replicas."), AGE),
    ("apps", "ReplicaSet"): (
        _path("Desired", ".spec.replicas", "integer", description="Desired replicas."),
        _path("Current", ".status.replicas", "integer", description="Current replicas."),
        _path("Ready", ".status.readyReplicas", "integer", description="Ready replicas."),
        AGE,
    ),
    ("apps", "DaemonSet"): (
        _path("Desired", ".status.desiredNumberScheduled", "integer", description="Nodes that should run the pod."),
        _path("Current", ".status.currentNumberScheduled", "integer", description="Nodes running the pod."),
        _path("Ready", ".status.numberReady", "integer", description="Nodes with the pod ready."),
        AGE,
    ),
    ("batch", "Job"): (
        _computed("Status", _job_status, "Complete, Failed, Suspended or Running."),
        _computed("Completions", _ratio(("status", "succeeded"), ("spec", "completions"), 1), "Succeeded pods."),
        _computed("Duration", _job_duration, "How long the job ran."),
        AGE,
    ),
    ("batch", "CronJob"): (
        _path("Schedule", ".spec.schedule", description="Cron schedule."),
        _path("Suspend", ".spec.suspend", "boolean", description="Whether scheduling is suspended."),
        _computed("Active", _count("status", "active"), "Running jobs.", "integer"),
        _path("Last Schedule", ".status.lastScheduleTime", "date", description="Time since the last run."),
        AGE,
    ),
    ("rbac.authorization.k8s.io", "Role"): (_CREATED_AT,),
    ("rbac.authorization.k8s.io", "ClusterRole"): (_CREATED_AT,),
    ("rbac.authorization.k8s.io", "RoleBinding"): (_computed("Role", _role_ref, "The bound role."), AGE),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (_computed("Role", _role_ref, "The bound role."), AGE),
    ("storage.k8s.io", "StorageClass"): (
        _path("Provisioner", ".provisioner", description="Volume plugin that provisions volumes."),
        _path("ReclaimPolicy", ".reclaimPolicy", description="Reclaim policy of provisioned volumes."),
        _path("VolumeBindingMode", ".volumeBindingMode", description="When volumes are bound."),
        _path("AllowVolumeExpansion", ".allowVolumeExpansion", "boolean", description="Whether volumes can grow."),
        AGE,
    ),
    ("snapshot.storage.k8s.io", "VolumeSnapshot"): (
        _path("ReadyToUse", ".status.readyToUse", "boolean", description="Whether the snapshot can be restored."),
        _path("SourcePVC", ".spec.source.persistentVolumeClaimName", description="The snapshotted claim."),
        _path("RestoreSize", ".status.restoreSize", description="Minimum size of a restored volume."),
        _path("SnapshotClass", ".spec.volumeSnapshotClassName", description="The VolumeSnapshotClass."),
        _path("SnapshotContent", ".status.boundVolumeSnapshotContentName", description="The bound content."),
        _path("CreationTime", ".status.creationTime", "date", description="When the snapshot was taken."),
        AGE,
    ),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"): (
        _path("Driver", ".driver", description="CSI driver."),
        _path("DeletionPolicy", ".deletionPolicy", description="What happens to the content on deletion."),
        AGE,
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (_CREATED_AT,),
    ("appcatalog.appscode.com", "AppBinding"): (
        _path("Type", ".spec.type", description="Type of the application."),
        _path("Version", ".spec.version", description="Version of the application."),
        AGE,
    ),
}


def columns_for(rt: ResourceType) -> tuple[Column, ...]:
    """The columns of ``rt``'s tables, Name first (Events, like kube-apiserver's, show Name only with -o wide)."""
    if rt.columns:
        return (
            NAME,
            *(
                Column(
                    c.name,
                    c.type,
                    c.json_path,
                    f"Custom resource definition column (in JSONPath format): {c.json_path}",
                )
                for c in rt.columns
            ),
        )
    if rt.schema is not None:
        return (NAME, AGE)
    builtin = _BUILTIN_COLUMNS.get((rt.group, rt.kind))
    if builtin is None:
        return (NAME, AGE)
    if rt.kind == "Event":
        return (*builtin, Column(NAME.name, NAME.type, NAME.json_path, NAME.description, 1, NAME.format))
    return (NAME, *builtin)


# --------------------------------------------------------------------------- tables
def _row(
    columns: Sequence[Column], obj: Mapping[str, Any], include_object: IncludeObject, now: datetime
) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": [column.cell(obj, now) for column in columns]}
    if include_object == "Object":
        row["object"] = obj
    elif include_object == "Metadata":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": TABLE_API_VERSION,
            "metadata": obj.get("metadata") or {},
        }
    return row


def to_table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    *,
    include_object: str = "Metadata",
    resource_version: str = "",
    continue_token: str = "",
    now: datetime | None = None,
    with_columns: bool = True,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects`` (one row each, in order).

    ``include_object`` is the ``includeObject`` query parameter: ``Metadata`` (the default) attaches
    ``PartialObjectMetadata``, ``Object`` the whole object, ``None`` nothing.
    """
    mode = _include_mode(include_object)
    when = now or datetime.now(UTC)
    columns = columns_for(rt)
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": metadata,
        "columnDefinitions": [c.definition() for c in columns] if with_columns else [],
        "rows": [_row(columns, obj, mode, when) for obj in objects],
    }


def table_event(
    rt: ResourceType,
    obj: dict[str, Any],
    *,
    include_object: str = "Metadata",
    with_columns: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The Table a watch event carries for one object.

    Like kube-apiserver, send ``with_columns=True`` with the first event of a watch and
    False afterwards: kubectl keeps using the column definitions it saw last.
    """
    resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return to_table(
        rt,
        [obj],
        include_object=include_object,
        resource_version=resource_version,
        now=now,
        with_columns=with_columns,
    )


def _include_mode(value: str) -> IncludeObject:
    if value in ("None", "Object"):
        return "None" if value == "None" else "Object"
    return "Metadata"
