"""API errors rendered as ``metav1.Status``, the body every Kubernetes client knows how to read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubestash.api.admission.errors import FieldError


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = list(causes)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [{"reason": c.type, "message": c.detail, "field": c.path} for c in self.causes]
        if details:
            body["details"] = details
        return body


def not_found(plural: str, group: str, name: str) -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', name=name, group=group, kind=plural)


def already_exists(plural: str, group: str, name: str) -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', name=name, group=group, kind=plural)


def invalid(kind: str, group: str, name: str, causes: Sequence[FieldError]) -> ApiError:
    resource = f"{kind}.{group}" if group else kind
    details = ", ".join(c.message for c in causes)
    return ApiError(
        422, "Invalid", f'{resource} "{name}" is invalid: {details}', name=name, group=group, kind=kind, causes=causes
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
