"""Every KubeStash object in the shared compatibility corpus (KubeStash docs and catalog examples) must decode,
and must come back byte-for-byte equal as a dict: model -> wire, and model -> YAML -> model -> wire.

New files in the corpus (see ``compat_corpus``) are picked up automatically; each document is its own test case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compat_corpus import COMPAT_FOLDERS, COMPAT_ROOT
from kubestash.api.manifests import ManifestError, dump_yaml, parse_documents, read_documents
from kubestash.api.registry import KindInfo, is_kubestash_api_version, lookup_kind


def _is_kubestash_group(api_version: object) -> bool:
    return isinstance(api_version, str) and api_version.split("/")[0].endswith(".kubestash.com")


@dataclass(frozen=True)
class Case:
    path: Path
    index: int
    data: Any = None
    read_error: str | None = None

    @property
    def id(self) -> str:
        rel = self.path.relative_to(COMPAT_ROOT).as_posix()
        if self.read_error is not None:
            return f"{rel}[unreadable]"
        kind = self.data.get("kind", "?")
        name = (self.data.get("metadata") or {}).get("name", "?")
        return f"{rel}[{self.index}]-{kind}-{name}"


def _yaml_files() -> list[Path]:
    files: set[Path] = set()
    for folder in COMPAT_FOLDERS:
        base = COMPAT_ROOT / folder
        for pattern in ("*.yaml", "*.yml"):
            files.update(p for p in base.rglob(pattern) if p.is_file())
    return sorted(files)


def _collect() -> list[Case]:
    cases: list[Case] = []
    for path in _yaml_files():
        try:
            documents = read_documents(str(path))
        except ManifestError as exc:
            cases.append(Case(path, -1, read_error=str(exc)))
            continue
        for doc in documents:
            if isinstance(doc.data, dict) and _is_kubestash_group(doc.data.get("apiVersion")):
                cases.append(Case(path, doc.index, doc.data))
    return cases


CASES = _collect()


def _kind_info(case: Case) -> KindInfo:
    if case.read_error is not None:
        pytest.fail(f"cannot read {case.path}: {case.read_error}")
    api_version, kind = case.data["apiVersion"], case.data.get("kind")
    assert is_kubestash_api_version(api_version), f"{api_version} is not a served KubeStash group"
    info = lookup_kind(api_version, kind)
    assert info is not None, f"unknown KubeStash kind {api_version} {kind}"
    return info


def test_compat_folders_exist_and_hold_kubestash_objects() -> None:
    for folder in COMPAT_FOLDERS:
        assert (COMPAT_ROOT / folder).is_dir(), f"missing compat folder {COMPAT_ROOT / folder}"
    per_folder = {folder: 0 for folder in COMPAT_FOLDERS}
    for case in CASES:
        per_folder[case.path.relative_to(COMPAT_ROOT).parts[0]] += 1
    for folder, count in per_folder.items():
        assert count >= 1, f"no KubeStash object found under {COMPAT_ROOT / folder}"
    kinds = {case.data["kind"] for case in CASES if case.read_error is None}
    # the corpus covers the core kinds users write by hand
    assert {"BackupStorage", "RetentionPolicy", "BackupConfiguration", "RestoreSession", "Addon", "Function"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decodes(case: Case) -> None:
    info = _kind_info(case)
    obj = info.decode(case.data)
    assert obj.kind == case.data["kind"]
    assert obj.api_version == case.data["apiVersion"]
    assert obj.name == case.data["metadata"]["name"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_round_trips_to_the_same_wire_dict(case: Case) -> None:
    info = _kind_info(case)
    assert info.decode(case.data).to_wire() == case.data


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_round_trips_through_yaml(case: Case) -> None:
    info = _kind_info(case)
    text = dump_yaml([info.decode(case.data).to_wire()])
    reparsed = parse_documents(text, f"<dump of {case.id}>")
    assert len(reparsed) == 1
    assert info.decode(reparsed[0].data).to_wire() == case.data
