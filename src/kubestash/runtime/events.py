"""Kubernetes Events for transitions a user should see (``kubectl describe`` / ``kubectl get events``).

Messages are written by reconcilers from conditions they already computed; they
must never contain secret values (a test greps Events for them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

EventKind = Literal["Normal", "Warning"]


class EventRecorder:
    def __init__(self, client: AsyncClient, component: str) -> None:
        self.client = client
        self.component = component

    async def record(self, obj: dict[str, Any], kind: EventKind, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{meta.get('name')}.{time.time_ns():x}", namespace=namespace),
            involvedObject=ObjectReference(
                apiVersion=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta.get("name"),
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
                resourceVersion=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message,
            type=kind,
            source=EventSource(component=self.component),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        await self.client.create(event)
