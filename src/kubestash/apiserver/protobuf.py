"""Decode the protobuf request bodies kubectl's imperative commands send.

``kubectl create namespace|secret|configmap|serviceaccount`` talk to the
server through typed clients that encode built-in kinds as Kubernetes protobuf
(``application/vnd.kubernetes.protobuf``) and do not fall back to JSON. No
maintained Python package ships Kubernetes' protobuf definitions, so this
module reads the wire format directly, with field tables for exactly those
kinds (taken from the field numbers in Kubernetes' ``generated.proto``).
Responses are always JSON, which these clients accept. Anything else gets a
415 telling the user to send YAML or JSON (``kubectl apply -f``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

MAGIC = b"k8s\x00"

Kind = Literal["string", "bytes", "bool", "int", "message", "time", "string_map", "bytes_map"]


@dataclass(frozen=True)
class F:
    name: str
    kind: Kind
    repeated: bool = False
    message: str = ""


_MESSAGES: dict[str, dict[int, F]] = {
    "TypeMeta": {1: F("apiVersion", "string"), 2: F("kind", "string")},
    "Unknown": {1: F("typeMeta", "message", message="TypeMeta"), 2: F("raw", "bytes")},
    "ObjectMeta": {
        1: F("name", "string"),
        2: F("generateName", "string"),
        3: F("namespace", "string"),
        5: F("uid", "string"),
        6: F("resourceVersion", "string"),
        7: F("generation", "int"),
        8: F("creationTimestamp", "time"),
        9: F("deletionTimestamp", "time"),
        10: F("deletionGracePeriodSeconds", "int"),
        11: F("labels", "string_map"),
        12: F("annotations", "string_map"),
        13: F("ownerReferences", "message", repeated=True, message="OwnerReference"),
        14: F("finalizers", "string", repeated=True),
    },
    "OwnerReference": {
        1: F("kind", "string"),
        3: F("name", "string"),
        4: F("uid", "string"),
        5: F("apiVersion", "string"),
        6: F("controller", "bool"),
        7: F("blockOwnerDeletion", "bool"),
    },
    "ObjectReference": {
        1: F("kind", "string"),
        2: F("namespace", "string"),
        3: F("name", "string"),
        4: F("uid", "string"),
        5: F("apiVersion", "string"),
        6: F("resourceVersion", "string"),
        7: F("fieldPath", "string"),
    },
    "LocalObjectReference": {1: F("name", "string")},
    "Namespace": {
        1: F("metadata", "message", message="ObjectMeta"),
        2: F("spec", "message", message="NamespaceSpec"),
    },
    "NamespaceSpec": {1: F("finalizers", "string", repeated=True)},
    "ConfigMap": {
        1: F("metadata", "message", message="ObjectMeta"),
        2: F("data", "string_map"),
        3: F("binaryData", "bytes_map"),
        4: F("immutable", "bool"),
    },
    "Secret": {
        1: F("metadata", "message", message="ObjectMeta"),
        2: F("data", "bytes_map"),
        3: F("type", "string"),
        4: F("stringData", "string_map"),
        5: F("immutable", "bool"),
    },
    "ServiceAccount": {
        1: F("metadata", "message", message="ObjectMeta"),
        2: F("secrets", "message", repeated=True, message="ObjectReference"),
        3: F("imagePullSecrets", "message", repeated=True, message="LocalObjectReference"),
        4: F("automountServiceAccountToken", "bool"),
    },
}
SUPPORTED_KINDS = ("Namespace", "ConfigMap", "Secret", "ServiceAccount")


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) for every field in a message."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _decode_message(data: bytes, message: str) -> dict[str, Any]:
    table = _MESSAGES[message]
    result: dict[str, Any] = {}
    for number, _wire, raw in _fields(data):
        field = table.get(number)
        if field is None:
            continue  # a field of a newer Kubernetes version: ignore, as protobuf does
        value = _decode_value(field, raw)
        if field.kind in ("string_map", "bytes_map"):
            result.setdefault(field.name, {}).update(value)
        elif field.repeated:
            result.setdefault(field.name, []).append(value)
        else:
            result[field.name] = value
    return result


def _decode_value(field: F, raw: Any) -> Any:
    if field.kind == "string":
        return bytes(raw).decode()
    if field.kind == "bytes":
        return bytes(raw)
    if field.kind == "bool":
        return bool(raw)
    if field.kind == "int":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if field.kind == "time":
        parts = dict((n, v) for n, _w, v in _fields(bytes(raw)))
        return datetime.fromtimestamp(parts.get(1, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if field.kind in ("string_map", "bytes_map"):
        entry = {n: v for n, _w, v in _fields(bytes(raw))}
        key = bytes(entry.get(1, b"")).decode()
        value = bytes(entry.get(2, b""))
        return {key: base64.b64encode(value).decode() if field.kind == "bytes_map" else value.decode()}
    return _decode_message(bytes(raw), field.message)


def decode(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf envelope -> the object as JSON-shaped data."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    unknown = _decode_message(body[len(MAGIC) :], "Unknown")
    type_meta: Mapping[str, Any] = unknown.get("typeMeta") or {}
    kind = str(type_meta.get("kind", ""))
    if kind not in SUPPORTED_KINDS:
        raise ProtobufError(
            f"protobuf bodies are accepted for {', '.join(SUPPORTED_KINDS)} only, not {kind or 'this kind'}; "
            "send JSON or YAML (for example kubectl apply -f)"
        )
    obj = {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind}
    obj.update(_decode_message(unknown.get("raw", b""), kind))
    return obj
