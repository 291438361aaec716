"""Field ownership (``metadata.managedFields``) in Kubernetes' own FieldsV1 encoding.

Server-side apply decides conflicts, and which fields an apply may delete, from
the sets of fields each manager owns. Clients read those sets too: ``kubectl
apply --server-side`` prints them in conflict errors, ``kubectl get
--show-managed-fields`` shows them, and controllers built on client-go's
``ExtractInto`` helpers parse them to rebuild their own apply configuration.
So the sets are stored exactly as kube-apiserver stores them: a trie of
path elements, ``f:<field>`` for map fields, ``k:{"name":"x"}`` for items of
lists merged by key, ``v:<json>`` / ``i:<n>`` (only ever read, from objects
written by a real cluster), with ``.`` marking a node that is owned itself and
also has owned children.

Without per-kind OpenAPI schemas this module cannot know how a list merges, so
it uses one rule everywhere: a non-empty list whose items are all objects
with distinct string ``name`` values is a list keyed by ``name`` (containers,
env, volumes, ports, ...); every other list is atomic and owned as a whole.
Maps are always granular (kube's ``+structType=atomic`` maps are treated as
granular too). Paths here are tuples of FieldsV1 element strings, e.g.
``("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:image")``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IGNORED_PATHS",
    "MISSING",
    "Comparison",
    "FieldPath",
    "ManagedEntry",
    "child",
    "compare",
    "decode_fields",
    "encode_fields",
    "field_element",
    "fields_of",
    "finalize_entries",
    "is_keyed_list",
    "json_equal",
    "key_element",
    "path_exists",
    "path_string",
    "read_entries",
    "remove_path",
    "without_managed_fields",
    "write_entries",
]

FieldPath = tuple[str, ...]


class _Missing:
    """Marks an absent map key or list item, distinct from an explicit ``null``."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# Fields kube-apiserver never records as owned (its "strip meta" manager): identity and server bookkeeping.
IGNORED_PATHS: frozenset[FieldPath] = frozenset(
    {
        ("f:apiVersion",),
        ("f:kind",),
        ("f:metadata",),
        ("f:metadata", "f:name"),
        ("f:metadata", "f:namespace"),
        ("f:metadata", "f:creationTimestamp"),
        ("f:metadata", "f:selfLink"),
        ("f:metadata", "f:uid"),
        ("f:metadata", "f:clusterName"),
        ("f:metadata", "f:generation"),
        ("f:metadata", "f:managedFields"),
        ("f:metadata", "f:resourceVersion"),
    }
)

MERGE_KEY = "name"


# --------------------------------------------------------------------------- path elements


def field_element(name: str) -> str:
    return "f:" + name


def key_element(key: Mapping[str, Any]) -> str:
    return "k:" + json.dumps(dict(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def is_keyed_list(value: Any) -> bool:
    """A non-empty list of objects with distinct string ``name`` values: merged item by item."""
    if not isinstance(value, list) or not value:
        return False
    names: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get(MERGE_KEY), str):
            return False
        names.add(item[MERGE_KEY])
    return len(names) == len(value)


def _item_element(item: Mapping[str, Any]) -> str:
    return key_element({MERGE_KEY: item[MERGE_KEY]})


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ``==``, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(b, dict | list):
        return False
    return bool(a == b)


def _parse_element(element: str) -> tuple[str, Any]:
    kind, _, rest = element.partition(":")
    if kind == "f" and rest:
        return "f", rest
    if kind in ("k", "v"):
        try:
            value = json.loads(rest)
        except ValueError:
            raise ValueError(f"invalid path element {element!r}") from None
        if kind == "k" and not isinstance(value, dict):
            raise ValueError(f"invalid key path element {element!r}")
        return kind, value
    if kind == "i" and rest.isdigit():
        return "i", int(rest)
    raise ValueError(f"invalid path element {element!r}")


def _find_item(items: list[Any], kind: str, value: Any) -> int | None:
    if kind == "i":
        return value if isinstance(value, int) and 0 <= value < len(items) else None
    for index, item in enumerate(items):
        if kind == "v" and json_equal(item, value):
            return index
        if (
            kind == "k"
            and isinstance(item, dict)
            and all(k in item and json_equal(item[k], v) for k, v in value.items())
        ):
            return index
    return None


def child(node: Any, element: str) -> Any:
    """The value ``element`` designates inside ``node``, or :data:`MISSING`."""
    try:
        kind, value = _parse_element(element)
    except ValueError:
        return MISSING
    if kind == "f":
        return node.get(value, MISSING) if isinstance(node, dict) else MISSING
    if not isinstance(node, list):
        return MISSING
    index = _find_item(node, kind, value)
    return MISSING if index is None else node[index]


def path_exists(obj: Any, path: FieldPath) -> bool:
    node = obj
    for element in path:
        node = child(node, element)
        if node is MISSING:
            return False
    return True


def remove_path(obj: Any, path: FieldPath) -> bool:
    """Delete the node at ``path`` in place; False if it was not there."""
    if not path:
        return False
    parent = obj
    for element in path[:-1]:
        parent = child(parent, element)
        if parent is MISSING:
            return False
    try:
        kind, value = _parse_element(path[-1])
    except ValueError:
        return False
    if kind == "f":
        if isinstance(parent, dict) and value in parent:
            del parent[value]
            return True
        return False
    if not isinstance(parent, list):
        return False
    index = _find_item(parent, kind, value)
    if index is None:
        return False
    del parent[index]
    return True


def path_string(path: FieldPath) -> str:
    """The path as kube-apiserver prints it in conflicts: ``.spec.containers[name="app"].image``."""
    out: list[str] = []
    for element in path:
        try:
            kind, value = _parse_element(element)
        except ValueError:
            out.append(f"[{element}]")
            continue
        if kind == "f":
            out.append("." + value)
        elif kind == "k":
            keys = ",".join(
                f"{k}={json.dumps(v, separators=(',', ':'), ensure_ascii=False)}" for k, v in sorted(value.items())
            )
            out.append(f"[{keys}]")
        elif kind == "v":
            out.append(f"[={json.dumps(value, separators=(',', ':'), ensure_ascii=False)}]")
        else:
            out.append(f"[{value}]")
    return "".join(out)


# --------------------------------------------------------------------------- FieldsV1 encoding


def encode_fields(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """The FieldsV1 trie of a set of owned paths."""
    members = {p for p in paths if p}
    root: dict[str, Any] = {}
    for path in members:
        node = root
        for element in path:
            node = node.setdefault(element, {})

    def render(node: dict[str, Any], prefix: FieldPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if node and prefix in members:
            out["."] = {}
        for element in sorted(node):
            out[element] = render(node[element], (*prefix, element))
        return out

    return render(root, ())


def decode_fields(fields_v1: Any) -> set[FieldPath]:
    """Owned paths of a FieldsV1 trie; ValueError if it is not one."""
    members: set[FieldPath] = set()

    def walk(node: Any, prefix: FieldPath) -> None:
        if not isinstance(node, dict):
            raise ValueError(f"FieldsV1 node at {path_string(prefix) or '.'} is not an object")
        for element, sub in node.items():
            if element == ".":
                if not prefix:
                    raise ValueError("FieldsV1 root cannot be marked as owned")
                members.add(prefix)
                continue
            _parse_element(element)
            path = (*prefix, element)
            if isinstance(sub, dict) and not sub:
                members.add(path)
            else:
                walk(sub, path)

    walk(fields_v1, ())
    return members


# --------------------------------------------------------------------------- field sets of objects


def fields_of(obj: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Paths an applied configuration sets: leaves, atomic lists, empty maps and keyed list items.

    Non-empty maps are not owned themselves, only what they contain, like
    kube's struct fields; keyed list items are owned themselves and field by field.
    """
    out: set[FieldPath] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = (*prefix, field_element(key))
            if isinstance(value, dict) and value:
                out |= fields_of(value, path)
            elif is_keyed_list(value):
                for item in value:
                    item_path = (*path, _item_element(item))
                    out.add(item_path)
                    out |= fields_of(item, item_path)
            else:
                out.add(path)
    return out


@dataclass
class Comparison:
    added: set[FieldPath] = field(default_factory=set)
    modified: set[FieldPath] = field(default_factory=set)
    removed: set[FieldPath] = field(default_factory=set)

    @property
    def changed(self) -> set[FieldPath]:
        """Added or modified: what a writer takes ownership of."""
        return self.added | self.modified


def _is_map_pair(a: Any, b: Any) -> bool:
    a_ok = a is MISSING or isinstance(a, dict)
    b_ok = b is MISSING or isinstance(b, dict)
    return a_ok and b_ok and bool((isinstance(a, dict) and a) or (isinstance(b, dict) and b))


def _is_keyed_pair(a: Any, b: Any) -> bool:
    def ok(v: Any) -> bool:
        return v is MISSING or v == [] or is_keyed_list(v)

    return ok(a) and ok(b) and (is_keyed_list(a) or is_keyed_list(b))


def _walk_compare(a: Any, b: Any, path: FieldPath, out: Comparison) -> None:
    if _is_map_pair(a, b):
        if a is MISSING:
            out.added.add(path)
        elif b is MISSING:
            out.removed.add(path)
        left: dict[str, Any] = {} if a is MISSING else a
        right: dict[str, Any] = {} if b is MISSING else b
        for key in dict.fromkeys([*left, *right]):
            _walk_compare(left.get(key, MISSING), right.get(key, MISSING), (*path, field_element(key)), out)
        return
    if _is_keyed_pair(a, b):
        left_items = {item[MERGE_KEY]: item for item in ([] if a is MISSING else a)}
        right_items = {item[MERGE_KEY]: item for item in ([] if b is MISSING else b)}
        for name in dict.fromkeys([*left_items, *right_items]):
            element = key_element({MERGE_KEY: name})
            _walk_compare(left_items.get(name, MISSING), right_items.get(name, MISSING), (*path, element), out)
        return
    if a is MISSING:
        out.added.add(path)
    elif b is MISSING:
        out.removed.add(path)
    elif not json_equal(a, b):
        out.modified.add(path)
    # Descendants of a value whose shape changed (map -> string, ...) simply stop existing; owners lose them
    # when ownership is pruned to the fields that still exist.


def compare(old: Any, new: Any) -> Comparison:
    """Paths added, modified and removed going from ``old`` to ``new`` (whole objects)."""
    out = Comparison()
    _walk_compare(old, new, (), out)
    for bucket in (out.added, out.modified, out.removed):
        bucket.discard(())
    return out


# --------------------------------------------------------------------------- managedFields entries


@dataclass
class ManagedEntry:
    """One ``metadata.managedFields`` item, with its field set decoded."""

    manager: str
    operation: str
    api_version: str
    fields: set[FieldPath]
    time: str | None = None
    subresource: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes two entries the same manager: appliers are one manager whatever the apiVersion."""
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        """How kube-apiserver names the manager in conflict messages."""
        out = json.dumps(self.manager)
        if self.subresource:
            out += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            out += f" using {self.api_version}"
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = encode_fields(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def read_entries(raw: Any) -> list[ManagedEntry]:
    """Decode a ``managedFields`` list; ValueError if any entry is malformed."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("metadata.managedFields must be a list")
    entries: list[ManagedEntry] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("metadata.managedFields items must be objects")
        fields_type = item.get("fieldsType", "FieldsV1")
        if fields_type != "FieldsV1":
            raise ValueError(f"unsupported managedFields fieldsType {fields_type!r}")
        operation = item.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError(f"managedFields operation must be Apply or Update, not {operation!r}")
        time = item.get("time")
        entries.append(
            ManagedEntry(
                manager=str(item.get("manager") or ""),
                operation=operation,
                api_version=str(item.get("apiVersion") or ""),
                fields=decode_fields(item.get("fieldsV1") or {}),
                time=time if isinstance(time, str) else None,
                subresource=str(item.get("subresource") or ""),
            )
        )
    return entries


MAX_UPDATE_MANAGERS = 10
ANCIENT_MANAGER = "ancient-changes"


def _sort_key(entry: ManagedEntry) -> tuple[str, str, str, str, str]:
    return (entry.operation, entry.time or "", entry.manager, entry.api_version, entry.subresource)


def finalize_entries(entries: Iterable[ManagedEntry]) -> list[ManagedEntry]:
    """Drop empty sets, fold the oldest Update managers past ten into ``ancient-changes``, sort like kube."""
    kept = [e for e in entries if e.fields]
    updates = sorted((e for e in kept if e.operation == "Update"), key=_sort_key)
    if len(updates) > MAX_UPDATE_MANAGERS:
        ancient = [e for e in updates if e.manager == ANCIENT_MANAGER and not e.subresource]
        others = [e for e in updates if not (e.manager == ANCIENT_MANAGER and not e.subresource)]
        # The folded entry counts as one of the ten, so fold enough of the oldest to leave nine others.
        surplus = ancient + others[: len(others) - (MAX_UPDATE_MANAGERS - 1)]
        surplus_ids = {id(e) for e in surplus}
        newest = max(surplus, key=_sort_key)
        merged = ManagedEntry(
            manager=ANCIENT_MANAGER,
            operation="Update",
            api_version=newest.api_version,
            fields=set().union(*(e.fields for e in surplus)),
            time=newest.time,
        )
        kept = [e for e in kept if id(e) not in surplus_ids]
        kept.append(merged)
    return sorted(kept, key=_sort_key)


def write_entries(obj: dict[str, Any], entries: Iterable[ManagedEntry]) -> None:
    """Store ``entries`` as ``obj.metadata.managedFields`` (removing the key when there are none)."""
    final = finalize_entries(entries)
    meta = obj.setdefault("metadata", {})
    if final:
        meta["managedFields"] = [e.to_json() for e in final]
    else:
        meta.pop("managedFields", None)


def without_managed_fields(obj: Any) -> Any:
    """A deep copy of ``obj`` minus ``metadata.managedFields``, the form field sets are computed on."""
    out = copy.deepcopy(obj)
    if isinstance(out, dict) and isinstance(out.get("metadata"), dict):
        out["metadata"].pop("managedFields", None)
    return out
