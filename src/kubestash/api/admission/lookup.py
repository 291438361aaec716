"""What admission may ask about other objects, and namespace usage policies.

Rules such as "one default BackupStorage per namespace" need the rest of the
cluster. They see it only through :class:`Lookup`, so the bundled API server
(backed by its store), the cluster webhook (backed by an informer cache) and
``kubestash validate`` (backed by the other objects in its input) run the same
rule code.

``complete`` says whether the lookup sees everything. Rules that would reject
an object because something is *absent* (no default BackupStorage exists) only
fire on a complete view; an offline check of one file cannot know what the
cluster holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from kubestash.api.k8s import LabelSelector
from kubestash.api.resource import Resource
from kubestash.api.shared import UsagePolicy

R = TypeVar("R", bound=Resource)


class Lookup(Protocol):
    @property
    def complete(self) -> bool: ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """Labels of a namespace, or None when the namespace is unknown."""
        ...

    def list(self, model: type[R], namespace: str | None = None) -> list[R]:
        """Objects of one kind, in one namespace or (None) in all of them."""
        ...


class StaticLookup:
    """A lookup over a fixed set of objects (tests and ``kubestash validate``)."""

    def __init__(
        self,
        objects: Iterable[Resource] = (),
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
        *,
        complete: bool = True,
    ) -> None:
        self._objects = list(objects)
        self._namespaces = dict(namespaces or {})
        self._complete = complete

    @property
    def complete(self) -> bool:
        return self._complete

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        labels = self._namespaces.get(namespace)
        if labels is None:
            return None
        return {"kubernetes.io/metadata.name": namespace, **labels}

    def list(self, model: type[R], namespace: str | None = None) -> list[R]:
        return [
            obj for obj in self._objects if isinstance(obj, model) and (namespace is None or obj.namespace == namespace)
        ]


def get(lookup: Lookup, model: type[R], namespace: str, name: str) -> R | None:
    return next((obj for obj in lookup.list(model, namespace) if obj.name == name), None)


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        present = req.key in labels
        values = req.values or []
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def usage_allowed(policy: UsagePolicy | None, owner_namespace: str, user_namespace: str, lookup: Lookup) -> bool | None:
    """May an object in ``user_namespace`` use one in ``owner_namespace``? None: cannot tell."""
    if owner_namespace == user_namespace:
        return True
    allowed = (policy or UsagePolicy()).allowed_namespaces
    if allowed.from_ == "All":
        return True
    if allowed.from_ == "Same":
        return False
    labels = lookup.namespace_labels(user_namespace)
    if labels is None:
        return None
    return allowed.selector is not None and selector_matches(allowed.selector, labels)
