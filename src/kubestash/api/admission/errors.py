"""Admission errors shaped like Kubernetes field errors.

Every problem names the field path (``spec.sessions[0].scheduler.schedule``)
and the reason, so ``kubectl`` users see the same kind of message the real
API server prints, and :meth:`AdmissionError.status` renders the HTTP 422
``Status`` body with one ``cause`` per field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from kubestash.api.registry import KINDS

ErrorType = Literal[
    "FieldValueRequired",
    "FieldValueInvalid",
    "FieldValueDuplicate",
    "FieldValueNotSupported",
    "FieldValueForbidden",
    "FieldValueNotFound",
    "FieldValueTooLong",
]

_PREFIX: dict[ErrorType, str] = {
    "FieldValueRequired": "Required value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueNotFound": "Not found",
    "FieldValueTooLong": "Too long",
}


@dataclass(frozen=True)
class FieldError:
    path: str
    """Dotted field path with list indexes, e.g. ``spec.backends[1].name``."""
    reason: str
    type: ErrorType = "FieldValueInvalid"

    @property
    def detail(self) -> str:
        """The message without the path, as a Kubernetes ``StatusCause.message``."""
        return f"{_PREFIX[self.type]}: {self.reason}" if self.reason else _PREFIX[self.type]

    @property
    def message(self) -> str:
        return f"{self.path}: {self.detail}"

    def __str__(self) -> str:
        return self.message


def required(path: str, reason: str = "") -> FieldError:
    return FieldError(path, reason, "FieldValueRequired")


def invalid(path: str, reason: str) -> FieldError:
    return FieldError(path, reason, "FieldValueInvalid")


def duplicate(path: str, reason: str) -> FieldError:
    return FieldError(path, reason, "FieldValueDuplicate")


def forbidden(path: str, reason: str) -> FieldError:
    return FieldError(path, reason, "FieldValueForbidden")


def not_supported(path: str, value: object, supported: Sequence[str]) -> FieldError:
    choices = ", ".join(f'"{s}"' for s in supported)
    return FieldError(path, f'"{value}": supported values: {choices}', "FieldValueNotSupported")


def not_found(path: str, reason: str) -> FieldError:
    return FieldError(path, reason, "FieldValueNotFound")


class AdmissionError(Exception):
    """An object was rejected; carries every problem found, not just the first."""

    def __init__(self, kind: str, name: str, errors: Sequence[FieldError]) -> None:
        self.kind = kind
        self.name = name
        self.errors = list(errors)
        details = "; ".join(e.message for e in self.errors)
        super().__init__(f'{kind}.{_group_hint(kind)} "{name}" is invalid: {details}')

    def status(self) -> dict[str, Any]:
        """The ``metav1.Status`` body kube-apiserver returns with HTTP 422."""
        group = _group_hint(self.kind)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'{self.kind}.{group} "{self.name}" is invalid: ' + ", ".join(e.message for e in self.errors),
            "reason": "Invalid",
            "details": {
                "name": self.name,
                "group": group,
                "kind": self.kind,
                "causes": [{"reason": e.type, "message": e.detail, "field": e.path} for e in self.errors],
            },
            "code": 422,
        }


def _group_hint(kind: str) -> str:
    return next((info.group for info in KINDS if info.kind == kind), "kubestash.com")


def format_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}
_TYPE_NAMES = {"int": "an integer", "str": "a string", "float": "a number", "bool": "a boolean"}


def from_validation_error(exc: ValidationError) -> list[FieldError]:
    """Translate pydantic errors into field errors, one per field path."""
    by_path: dict[str, FieldError] = {}
    union_tags: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc: list[int | str] = []
        tags: list[str] = []
        for part in err["loc"]:
            if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
                tags.append(part)
            else:
                loc.append(part)
        path = format_path(loc) or "<root>"
        if tags:
            union_tags.setdefault(path, []).extend(t for t in tags if t in _TYPE_NAMES)
            continue
        if path not in by_path:
            by_path[path] = _translate(path, err)
    for path, tags in union_tags.items():
        if path not in by_path:
            kinds = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in tags)) or "another type"
            by_path[path] = invalid(path, f"must be {kinds}")
    return list(by_path.values())


def _translate(path: str, err: Any) -> FieldError:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "missing":
        return required(path)
    if kind == "extra_forbidden":
        return FieldError(path, "unknown field", "FieldValueNotSupported")
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", "")).replace("'", '"').replace(" or ", ", ")
        return FieldError(path, f'"{err["input"]}": supported values: {expected}', "FieldValueNotSupported")
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) and not msg.startswith(repr(value)):
        msg = f"{json.dumps(value)}: {msg}"
    return invalid(path, msg)
