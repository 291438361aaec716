"""What every reconciler does the same way: conditions on raw status, Secrets, patches, Events."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from kubestash.api import conditions as cond
from kubestash.api.durations import format_go_duration
from kubestash.controllers.kinds import by_kind
from kubestash.runtime.events import EventKind, EventRecorder

log = logging.getLogger(__name__)

FINALIZER = "kubestash.com/cleanup"


def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str) -> None:
    """Set a condition; ``lastTransitionTime`` moves only when the status changes."""
    for existing in conditions:
        if existing.get("type") == type_:
            if existing.get("status") != status:
                existing["lastTransitionTime"] = cond.now_rfc3339()
            existing.update(status=status, reason=reason, message=message)
            return
    now = cond.now_rfc3339()
    conditions.append(
        {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
    )


def close_session(status: dict[str, Any], metadata: Mapping[str, Any], now: datetime) -> None:
    """The last step of a backup or restore session: ``MetricsPushed`` (which KubeStash's phase rules wait
    for) and ``duration`` since the session's creation."""
    set_condition(
        status["conditions"],
        cond.METRICS_PUSHED,
        "True",
        cond.REASON_SUCCESSFULLY_PUSHED_METRICS,
        "Session metrics are in status (no Prometheus Pushgateway is configured)",
    )
    created = cond.parse_time(metadata.get("creationTimestamp")) or now
    status["duration"] = format_go_duration(now - created)


def has_condition(conditions: list[dict[str, Any]], type_: str, status: str | None = None) -> bool:
    """Whether a raw condition of ``type_`` is present (with ``status``, when given)."""
    return any(c.get("type") == type_ and (status is None or c.get("status") == status) for c in conditions)


def remove_condition(conditions: list[dict[str, Any]], type_: str) -> None:
    conditions[:] = [c for c in conditions if c.get("type") != type_]


def abandon(*futures: asyncio.Future[Any] | None) -> None:
    """Cancel the reads still running that nobody will wait for (another read failed first); the failure of
    one that already ended is taken here, so asyncio does not log it as never retrieved."""
    for future in futures:
        if future is None:
            continue
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


async def get_or_none(
    client: AsyncClient, resource: Any, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    """The object as a dict, or None if it does not exist; other API errors propagate."""
    try:
        obj = await client.get(resource, name, namespace=namespace) if namespace else await client.get(resource, name)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return obj.to_dict()  # type: ignore[no-any-return]


async def load_secret(client: AsyncClient, namespace: str, name: str) -> dict[str, bytes] | None:
    """The Secret's data, decoded; None if it does not exist."""
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    decoded = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    decoded.update({k: v.encode() for k, v in (secret.stringData or {}).items()})
    return decoded


async def patch(client: AsyncClient, kind: str, name: str, namespace: str, body: Mapping[str, Any]) -> None:
    await client.patch(by_kind(kind), name, dict(body), namespace=namespace, patch_type=PatchType.MERGE)


async def patch_status(client: AsyncClient, kind: str, name: str, namespace: str, status: Mapping[str, Any]) -> None:
    await client.patch(
        by_kind(kind).Status,  # type: ignore[attr-defined]
        name,
        {"status": dict(status)},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


async def ensure_finalizer(client: AsyncClient, kind: str, obj: Mapping[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        await patch(
            client,
            kind,
            meta["name"],
            meta.get("namespace", ""),
            {"metadata": {"finalizers": [*finalizers, FINALIZER]}},
        )


async def release_finalizer(client: AsyncClient, kind: str, obj: Mapping[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    rest = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    await patch(client, kind, meta["name"], meta.get("namespace", ""), {"metadata": {"finalizers": rest or None}})


async def record(events: EventRecorder, obj: Mapping[str, Any], kind: EventKind, reason: str, message: str) -> None:
    """Record an Event; failing to record one never fails a reconcile."""
    try:
        await events.record(dict(obj), kind, reason, message)
    except ApiError as exc:
        log.debug("event not recorded: %s", exc.status.message)


async def create(client: AsyncClient, manifest: Mapping[str, Any]) -> bool:
    """Create an object of one of our kinds from its manifest; False if it exists already."""
    resource = by_kind(str(manifest["kind"])).from_dict(dict(manifest))  # type: ignore[attr-defined]
    try:
        await client.create(resource)
    except ApiError as exc:
        if exc.status.code == 409:
            return False
        raise
    return True
