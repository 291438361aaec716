"""Turn what a session asks for (an Addon task plus its ``params``) into the exact command a task runs.

KubeStash builds a task's inputs from the built-in variables (``namespace``, ``backupSession``, ``snapshot``, ...),
then every parameter the Addon task declares (its ``default``, or ``""``), then the session's ``params`` on top,
and expands the Function's ``args`` with them. We do the same, and additionally fail early, with a message naming
the task, where KubeStash would only fail inside the job:

* a ``required`` parameter with neither a value nor a default (KubeStash would run ``--paths=`` and back up nothing);
* a ``params`` key the Addon task does not declare. KubeStash passes such keys through silently, so a typo
  (``path:`` for ``paths:``) is ignored and the default used instead; no manifest of the KubeStash docs relies on an
  undeclared parameter, so rejecting it costs no compatibility and saves a silently wrong backup.

``params`` is a free-form object. KubeStash decodes it as ``map[string]string``; we accept the scalars YAML users
write unquoted too (``true`` -> ``"true"``, ``5`` -> ``"5"``, ``null`` -> ``""``) and join a list with commas,
which is what the comma-list parameters (``paths``, ``exclude``) mean. Strings are kept exactly as given, and a
given value, even ``""``, replaces the default, as in KubeStash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from kubestash.api.addons import Addon, Function, Task, VolumeTemplate
from kubestash.api.k8s import VolumeMount
from kubestash.api.shared import TaskReference
from kubestash.tasks.templating import TemplateError, substitute

TaskKind = Literal["backup", "restore"]


class TaskError(Exception):
    """A task cannot be run as configured; the message is written for the user who configured it."""


@dataclass(frozen=True)
class ResolvedTask:
    """One Addon task with its parameters decided and its Function's args expanded."""

    name: str
    function: str
    driver: str | None
    singleton: bool
    """One run for the whole target (true) or one per component -- pod, replica or PVC (false)."""
    parameters: Mapping[str, str]
    """Declared parameters that have a value: the session's ``params``, else the Addon default."""
    args: tuple[str, ...]
    volume_templates: tuple[VolumeTemplate, ...]
    """As the Addon writes them; :func:`component_volumes` expands ``${PVC_NAME}`` etc. per component."""
    volume_mounts: tuple[VolumeMount, ...]
    kind: TaskKind
    addon: str
    image: str | None


def resolve_task(
    addon: Addon, function: Function, task: TaskReference, kind: TaskKind, variables: Mapping[str, str]
) -> ResolvedTask:
    """Resolve ``task`` of ``addon`` run by ``function``; ``variables`` are the built-ins (see module docstring)."""
    definition = _find_task(addon, task.name, kind)
    if definition.function != function.name:
        raise TaskError(
            f"task {task.name}: Addon {addon.name} runs it with Function {definition.function}, not {function.name}"
        )
    parameters = _parameters(definition, task)
    declared = {p.name: "" for p in definition.parameters or [] if p.name}
    inputs = {**variables, **declared, **parameters}
    args = tuple(substitute(arg, inputs) for arg in function.spec.args or [])
    return ResolvedTask(
        name=task.name,
        function=function.name,
        driver=definition.driver,
        singleton=bool(definition.singleton),
        parameters=MappingProxyType(parameters),
        args=args,
        volume_templates=tuple(definition.volume_template or []),
        volume_mounts=tuple(definition.volume_mounts or []),
        kind=kind,
        addon=addon.name,
        image=function.spec.image,
    )


def component_volumes(task: ResolvedTask, variables: Mapping[str, str]) -> tuple[VolumeTemplate, ...]:
    """The task's volume templates for one component, ``variables`` (``PVC_NAME``, ``POD_ORDINAL``...) expanded.

    A ``${VAR}`` without a default that nobody set is an error rather than an empty claim name.
    """
    inputs = {**task.parameters, **variables}
    volumes: list[VolumeTemplate] = []
    for template in task.volume_templates:
        try:
            expanded = _expand(template.to_wire(), inputs)
        except TemplateError as exc:
            raise TaskError(f"task {task.name}: volume {template.name}: variable {exc.name} is not set") from exc
        volumes.append(VolumeTemplate.model_validate(expanded))
    return tuple(volumes)


def parse_args(args: Sequence[str]) -> dict[str, str]:
    """Read expanded Function args the way the task binary's flag parser does.

    ``--name=value`` gives ``{"name": "value"}`` (the value may be empty or contain ``=`` and commas, kept as is);
    ``--name`` alone is a boolean flag, ``"true"``; a single dash works the same. The first positional argument,
    the subcommand (``backup``/``restore``), is stored under the key ``""``. A repeated flag keeps its last value.
    A second positional argument or a flag without a name is a :class:`TaskError`.
    """
    parsed: dict[str, str] = {}
    for arg in args:
        if not arg.startswith("-"):
            if "" in parsed:
                raise TaskError(f"unexpected argument {arg!r} after {parsed['']!r}")
            parsed[""] = arg
            continue
        name, sep, value = arg.lstrip("-").partition("=")
        if not name:
            raise TaskError(f"argument {arg!r} has no flag name")
        parsed[name] = value if sep else "true"
    return parsed


def _find_task(addon: Addon, name: str, kind: TaskKind) -> Task:
    tasks = (addon.spec.backup_tasks if kind == "backup" else addon.spec.restore_tasks) or []
    if not name:
        raise TaskError(f"a {kind} task of Addon {addon.name} must name the task")
    for task in tasks:
        if task.name == name:
            return task
    available = ", ".join(t.name or "?" for t in tasks) or "none"
    raise TaskError(f"Addon {addon.name} has no {kind} task {name!r} (it has: {available})")


def _parameters(definition: Task, task: TaskReference) -> dict[str, str]:
    declared = {p.name: p for p in definition.parameters or [] if p.name}
    given = task.params or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        names = ", ".join(declared) or "none"
        raise TaskError(f"task {task.name}: unknown parameter {', '.join(unknown)} (the task declares: {names})")
    values: dict[str, str] = {}
    for name, param in declared.items():
        value = _as_string(task.name, name, given[name]) if name in given else param.default
        if not value and param.required:
            raise TaskError(f"task {task.name}: parameter {name} is required")
        if value is not None:
            values[name] = value
    return values


def _as_string(task: str, name: str, value: Any) -> str:
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ",".join(_as_string(task, name, v) for v in value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise TaskError(f"task {task}: parameter {name} must be a string, not {type(value).__name__}")


def _expand(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, variables, strict=True)
    if isinstance(value, dict):
        return {key: _expand(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, variables) for item in value]
    return value


__all__ = ["ResolvedTask", "TaskError", "TaskKind", "component_volumes", "parse_args", "resolve_task"]
