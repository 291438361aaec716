"""Reading Kubernetes manifests: multi-document YAML, `kind: List`, files and directories.

YAML is read the way Kubernetes reads it: timestamps stay strings (PyYAML would
turn an unquoted ``2023-12-14T08:38:01Z`` into a datetime that no API field
accepts), and every document remembers the file and line it came from so
errors point at the user's text. Syntax errors become :class:`ManifestError`
carrying ``file:line``, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _KubeLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader without the timestamp resolver."""


_KubeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}

YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    source: str
    index: int
    """Position of the document in its file (0-based), counting `kind: List` items separately."""
    line: int
    """1-based line where the document starts."""
    data: Any

    @property
    def location(self) -> str:
        return f"{self.source}:{self.index}"


class ManifestError(Exception):
    """A file that cannot be read as YAML: `file:line: message`."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def parse_documents(text: str, source: str) -> list[Document]:
    """Split YAML text into documents; empty documents are dropped, `kind: List` is expanded."""
    loader = _KubeLoader(text)
    documents: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            line = node.start_mark.line + 1
            for item in _expand_list(data):
                documents.append(Document(source, len(documents), line, item))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ManifestError(source, line, problem or "invalid YAML") from None
    except yaml.YAMLError as exc:
        raise ManifestError(source, None, str(exc)) from None
    finally:
        loader.dispose()
    return documents


def _expand_list(data: Any) -> Iterator[Any]:
    if data is None:
        return
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
        yield from data["items"]
    else:
        yield data


def iter_manifest_files(paths: Iterable[str]) -> Iterator[str]:
    """Expand directories (recursively, sorted) into YAML/JSON files; `-` is standard input."""
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix in YAML_SUFFIXES:
                    yield str(child)
        else:
            yield raw


def read_documents(path: str) -> list[Document]:
    if path == "-":
        return parse_documents(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(path, None, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise ManifestError(path, None, "not UTF-8 text") from None
    return parse_documents(text, path)


def dump_yaml(objects: Iterable[Any]) -> str:
    """Multi-document YAML in Kubernetes' style (block style, keys in the given order)."""
    dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(list(objects), Dumper=dumper, sort_keys=False, default_flow_style=False)
