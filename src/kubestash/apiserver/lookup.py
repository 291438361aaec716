"""The admission :class:`~kubestash.api.admission.Lookup` over the server's store.

It sees every object, so rules that fire on absence (no default BackupStorage)
apply, exactly as they would behind a real cluster's webhook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import ValidationError

from kubestash.api.registry import kind_info
from kubestash.api.resource import Resource
from kubestash.apiserver.store import Store

R = TypeVar("R", bound=Resource)


class StoreLookup:
    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def complete(self) -> bool:
        return True

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        ns = self._store.get("namespaces", "", namespace)
        if ns is None:
            return None
        labels = dict((ns.get("metadata") or {}).get("labels") or {})
        labels.setdefault("kubernetes.io/metadata.name", namespace)
        return labels

    def list(self, model: type[R], namespace: str | None = None) -> list[R]:
        info = kind_info(model)
        out: list[R] = []
        for data in self._store.list_objects(info.crd_name, namespace):
            try:
                out.append(model.model_validate(data))
            except ValidationError:
                continue  # stored before a stricter rule existed; not a reason to block others
        return out
