"""``kubestash validate``: check manifests offline, the way the API server would admit them.

Rules that need other objects (one default BackupStorage per namespace, no
two repositories in one directory, usage policies) are checked against the
other objects given. Which objects count as "together" is ``--scope``:
by default one file, the unit a user applies with ``kubectl apply -f``;
``directory`` and ``input`` widen it. Directories often hold alternatives
rather than one deployment (KubeStash's own guides keep ``s3.yaml`` and
``minio.yaml``, both the namespace default, side by side), so widening is a
choice the user makes.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import ValidationError

from kubestash.api.admission import StaticLookup, review
from kubestash.api.manifests import Document, ManifestError, iter_manifest_files, read_documents
from kubestash.api.registry import is_kubestash_api_version, lookup_kind
from kubestash.api.resource import Resource

Scope = Literal["directory", "file", "input"]


@dataclass(frozen=True)
class Problem:
    where: str
    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.where} {self.what}: {self.message}"


@dataclass
class Report:
    problems: list[Problem]
    skipped: list[str]
    valid: int
    invalid: int
    unreadable: int

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unreadable


def _label(data: dict[str, Any]) -> str:
    meta = data.get("metadata")
    name = meta.get("name") or meta.get("generateName") if isinstance(meta, dict) else None
    return f"{data.get('kind') or '<no kind>'}/{name or '<no name>'}"


def _group_key(source: str, scope: Scope) -> str:
    if scope == "input":
        return ""
    if scope == "file" or source == "<stdin>":
        return source
    return str(Path(source).parent)


def _namespace_labels(doc: Document) -> tuple[str, dict[str, str]] | None:
    data = doc.data
    if data.get("apiVersion") != "v1" or data.get("kind") != "Namespace":
        return None
    meta = data.get("metadata") or {}
    return str(meta.get("name") or ""), dict(meta.get("labels") or {})


def check(paths: list[str], scope: Scope = "file") -> tuple[Report, list[str]]:
    """Validate every KubeStash object under ``paths``; also return unreadable-file messages."""
    report = Report([], [], 0, 0, 0)
    errors: list[str] = []
    groups: dict[str, list[Document]] = defaultdict(list)
    for path in iter_manifest_files(paths):
        try:
            documents = read_documents(path)
        except ManifestError as exc:
            errors.append(str(exc))
            report.unreadable += 1
            continue
        for doc in documents:
            groups[_group_key(doc.source, scope)].append(doc)
    for docs in groups.values():
        _check_group(docs, report)
    return report, errors


def _check_group(docs: list[Document], report: Report) -> None:
    ours: list[Document] = []
    others: list[Resource] = []
    namespaces: dict[str, dict[str, str]] = {}
    for doc in docs:
        if not isinstance(doc.data, dict):
            report.problems.append(Problem(doc.location, "<document>", "not a Kubernetes object (expected a mapping)"))
            report.invalid += 1
            continue
        ns = _namespace_labels(doc)
        if ns is not None:
            namespaces[ns[0]] = ns[1]
        api_version = str(doc.data.get("apiVersion") or "")
        if not is_kubestash_api_version(api_version):
            report.skipped.append(f"{doc.location} {_label(doc.data)}")
            continue
        ours.append(doc)
        info = lookup_kind(api_version, str(doc.data.get("kind") or ""))
        if info is not None:
            with contextlib.suppress(ValidationError):
                others.append(info.decode(doc.data))
    lookup = StaticLookup(others, namespaces, complete=False)
    for doc in ours:
        result = review(doc.data, lookup)
        if result.errors:
            report.invalid += 1
            what = _label(doc.data)
            report.problems += [Problem(doc.location, what, e.message) for e in result.errors]
        else:
            report.valid += 1


@click.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    metavar="PATH",
    help="File or directory (recursive) of YAML/JSON manifests; - reads standard input.",
)
@click.option(
    "--scope",
    type=click.Choice(["directory", "file", "input"]),
    default="file",
    show_default=True,
    help="Which objects are checked against each other for cross-object rules.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not list skipped non-KubeStash objects.")
def validate(paths: tuple[str, ...], scope: Scope, quiet: bool) -> None:
    """Validate KubeStash manifests offline; exit 1 if any object is invalid."""
    report, errors = check(list(paths), scope)
    for line in errors:
        click.echo(line, err=True)
    for problem in report.problems:
        click.echo(str(problem))
    if not quiet:
        for skipped in report.skipped:
            click.echo(f"{skipped}: skipped (not a KubeStash object)")
    summary = f"{report.valid} valid, {report.invalid} invalid, {len(report.skipped)} skipped"
    if report.unreadable:
        summary += f", {report.unreadable} unreadable file(s)"
    click.echo(summary, err=True)
    sys.exit(0 if report.ok else 1)
