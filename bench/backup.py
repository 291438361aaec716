"""Benchmark a backup end to end: ``kubestash up`` + ``kubestash trigger --wait`` against plain ``restic backup``.

Run with the project's virtualenv::

    .venv/bin/python bench/backup.py [--size-mib 1024] [--seed 1] [--latency-runs 5] [--repeats 1]
        [--engine native|restic] [--keep] [--out FILE]

A seeded dataset is generated first (deterministic from ``--seed``): about 60% large random files, 25%
compressible text files and 20,000 small files (fewer when ``--size-mib`` is below 1024, in proportion).

*Reference*: plain ``restic init`` and ``restic backup <dataset>`` into a fresh local repository, then the same
backup again (an unchanged incremental). Each restic run gets a fresh, empty ``--cache-dir``, as our task runner
does (it gives every run a cache directory in a new scratch directory), so both sides pay the same cold cache.

*Ours*: ``kubestash up`` in a temporary data directory; the bench creates a local BackupStorage, a
RetentionPolicy, the encryption Secret, a PersistentVolume + PersistentVolumeClaim whose hostPath is the
dataset, and a BackupConfiguration on that PVC with the ``pvc-addon``. The BackupConfiguration's automatic
initial backup is the *first backup*; ``kubestash trigger <bc> --wait`` (the CLI, timed as a process) is the
*unchanged incremental*. A second PVC on a 1 MB directory measures the latency from creating a BackupSession
to its Snapshot being ``Succeeded``. ``--engine`` is what ``kubestash up`` moves the data with (``--engine``
of ``kubestash up``, default its default); the reference is plain restic either way.

One JSON document goes to stdout (and to ``--out``); progress goes to stderr.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Process, kubestash_argv, log, proc_status_mb, run_and_print
from lightkube import Client, KubeConfig
from lightkube.codecs import from_dict

from kubestash.api.sessions import backup_session_manifest
from kubestash.controllers.kinds import by_kind
from kubestash.engine.select import DEFAULT_ENGINE, ENGINE_NAMES

MIB = 1024 * 1024
PASSWORD = "bench-only-not-a-secret"
NAMESPACE = "bench"
SESSION = "bench-session"
BIG_BC = "dataset-backup"
SMALL_BC = "small-backup"
FINAL = ("Succeeded", "Failed", "Skipped")
SMALL_FILES_AT_1GIB = 20_000
LARGE_FILE_MIB = 64
TEXT_FILE_MIB = 8
LATENCY_POLL_S = 0.02
SESSION_POLL_S = 0.1
BACKUP_TIMEOUT_S = 3600.0
TARGETS: dict[str, float] = {"first_backup_ratio": 1.10, "incremental_ratio": 1.25, "latency_1mb_s": 2.0}

REFERENCE_DESCRIPTION = (
    "Plain restic 0.14 on the same dataset, same machine, same run: `restic init --repository-version 2` into a "
    "fresh local directory, then `restic backup --json --host host-0 -- <dataset>` (first), then the same command "
    "again (unchanged incremental). Each run gets a fresh, empty --cache-dir, like our task runner's per-run "
    "scratch cache. `first_s` = init + first backup, because our first backup initializes the repository too."
)


# ------------------------------------------------------------------- dataset
@dataclass
class Dataset:
    root: Path
    seed: int
    size_mib: int
    files: int = 0
    bytes: int = 0
    parts: dict[str, dict[str, int]] = field(default_factory=dict)
    generate_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "size_mib": self.size_mib,
            "files": self.files,
            "bytes": self.bytes,
            "parts": self.parts,
            "generate_s": round(self.generate_s, 2),
        }


def _words(rng: random.Random, count: int) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(count)]


class TextSource:
    """Log-like lines from a fixed vocabulary: compresses several times with zstd, but never repeats exactly."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = _words(rng, 600)
        self.levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
        self.line = 0

    def block(self, size: int) -> bytes:
        out: list[str] = []
        total = 0
        rng, words = self.rng, self.words
        while total < size:
            self.line += 1
            text = " ".join(rng.choices(words, k=rng.randint(4, 16)))
            line = f"{self.line:09d} {rng.choice(self.levels)} component-{rng.randrange(40)}: {text}\n"
            out.append(line)
            total += len(line)
        return "".join(out).encode()[:size]


def generate_dataset(root: Path, size_mib: int, seed: int) -> Dataset:
    """~60% large random files, ~25% text, the rest in small files (20,000 at 1 GiB, proportionally fewer below)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    text = TextSource(random.Random(seed + 1))
    data = Dataset(root, seed, size_mib)
    total = size_mib * MIB
    large_total, text_total = int(total * 0.60), int(total * 0.25)
    small_total = total - large_total - text_total
    small_count = max(50, round(SMALL_FILES_AT_1GIB * size_mib / 1024))

    def write(path: Path, payload: bytes, part: str) -> None:
        path.write_bytes(payload)
        entry = data.parts.setdefault(part, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += len(payload)

    big = root / "large"
    big.mkdir(parents=True)
    large_size = min(LARGE_FILE_MIB * MIB, max(MIB, large_total // 4))
    i = 0
    remaining = large_total
    while remaining > 0:
        size = min(large_size, remaining)
        path = big / f"blob-{i:03d}.bin"
        with path.open("wb") as out:
            left = size
            while left > 0:
                chunk = min(4 * MIB, left)
                out.write(rng.randbytes(chunk))
                left -= chunk
        entry = data.parts.setdefault("large_random", {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
        remaining -= size
        i += 1

    logs = root / "text"
    logs.mkdir()
    text_size = min(TEXT_FILE_MIB * MIB, max(256 * 1024, text_total // 4))
    i = 0
    remaining = text_total
    while remaining > 0:
        size = min(text_size, remaining)
        write(logs / f"service-{i:03d}.log", text.block(size), "compressible_text")
        remaining -= size
        i += 1

    # Small files: sizes 1..2*mean-1 KiB-ish, half random, half text, 250 per directory.
    mean = max(1, small_total // small_count)
    pool = text.block(max(4 * mean, 1 * MIB))
    for n in range(small_count):
        folder = root / "small" / f"d{n // 250:03d}"
        if n % 250 == 0:
            folder.mkdir(parents=True)
        size = rng.randint(max(1, mean // 8), max(1, 2 * mean - mean // 8))
        if n % 2:
            payload = rng.randbytes(size)
        else:
            start = rng.randrange(max(1, len(pool) - size))
            payload = pool[start : start + size]
        write(folder / f"f{n:05d}.{'bin' if n % 2 else 'txt'}", payload, "small_files")

    data.files = sum(p["files"] for p in data.parts.values())
    data.bytes = sum(p["bytes"] for p in data.parts.values())
    data.generate_s = time.perf_counter() - started
    return data


def small_tree(root: Path, seed: int) -> int:
    """The 1 MB latency target: 4 files, 1,048,576 bytes in all."""
    rng = random.Random(seed + 2)
    root.mkdir(parents=True)
    (root / "db.bin").write_bytes(rng.randbytes(512 * 1024))
    (root / "app.log").write_bytes(TextSource(rng).block(384 * 1024))
    (root / "conf").mkdir()
    (root / "conf" / "a.yaml").write_bytes(rng.randbytes(64 * 1024))
    (root / "conf" / "b.yaml").write_bytes(rng.randbytes(64 * 1024))
    return 1024 * 1024


# ----------------------------------------------------------------- processes
@dataclass
class Timed:
    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float
    maxrss_mb: float


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run a process to its end; wall time, plus its own CPU and peak RSS from ``wait4`` (children included)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(
            wall,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
        )


def restic_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "AWS_", "GOOGLE_", "AZURE_"))}
    env["RESTIC_PASSWORD"] = PASSWORD
    return env


def restic_summary(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and '"summary"' in line:
            doc: dict[str, Any] = json.loads(line)
            keys = ("files_new", "files_unmodified", "data_added", "total_files_processed", "total_duration")
            return {k: doc.get(k) for k in keys}
    return {}


def bench_reference(dataset: Dataset, root: Path, repeats: int) -> dict[str, Any]:
    """The reference ``repeats`` times, each into a fresh repository; the first repeat in full, medians of all."""
    results = [reference_once(dataset, root, i, extras=i == 0) for i in range(repeats)]
    out = results[0]
    if repeats > 1:
        keys = ("first_s", "init_s", "first_backup_s", "incremental_s", "incremental_warm_cache_s")
        out["repeats"] = {k: [r[k] for r in results] for k in keys}
        out.update({k: round(statistics.median(r[k] for r in results), 3) for k in keys})
    return out


def reference_once(dataset: Dataset, root: Path, index: int, *, extras: bool) -> dict[str, Any]:
    repo = root / f"reference-repo-{index}"
    env = restic_env()
    caches = root / f"reference-caches-{index}"
    runs: dict[str, Timed] = {}

    def restic(name: str, *args: str, cache: str | None = None) -> Timed:
        cache_dir = caches / (cache or name)
        timed = run_timed(["restic", "-r", str(repo), "--cache-dir", str(cache_dir), *args], env)
        if timed.returncode != 0:
            raise RuntimeError(f"restic {name} failed ({timed.returncode}): {timed.stderr[-2000:]}")
        runs[name] = timed
        log(f"  reference {name}: {timed.wall_s:.2f}s")
        return timed

    backup = ("backup", "--json", "--host", "host-0", "--", str(dataset.root))
    restic("init", "init", "--repository-version", "2")
    first = restic("first_backup", *backup)
    incremental = restic("incremental", *backup)
    warm = restic("incremental_warm_cache", *backup, cache="incremental")
    if extras:  # restic runs a task may make around a backup, alone, for the record (fresh caches, like ours)
        restic("cat_config", "cat", "config")
        restic("check", "check")
        restic("stats_raw_data", "stats", "--mode", "raw-data", "--json")
    other = ("cat_config", "check", "stats_raw_data")
    out = {
        "description": REFERENCE_DESCRIPTION,
        "first_s": round(runs["init"].wall_s + first.wall_s, 3),
        "init_s": round(runs["init"].wall_s, 3),
        "first_backup_s": round(first.wall_s, 3),
        "incremental_s": round(incremental.wall_s, 3),
        "incremental_warm_cache_s": round(warm.wall_s, 3),
        "first_summary": restic_summary(first.stdout),
        "incremental_summary": restic_summary(incremental.stdout),
        "cpu_s": {name: round(t.cpu_s, 2) for name, t in runs.items()},
        "maxrss_mb": {name: round(t.maxrss_mb, 1) for name, t in runs.items()},
        "other_restic_runs_s": {k: round(runs[k].wall_s, 3) for k in other if k in runs},
        "repository_bytes": dir_bytes(repo),
    }
    shutil.rmtree(repo, ignore_errors=True)  # a repeat's repository is not needed any more: free the space
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------- /proc stats
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_times(pid: int) -> dict[str, float]:
    """utime+stime of the process, and of its reaped children (tasks, and the restic runs they reaped)."""
    f = _stat_fields(pid)
    return {
        "self": (int(f[11]) + int(f[12])) / CLOCK_TICKS,
        "children": (int(f[13]) + int(f[14])) / CLOCK_TICKS,
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in before}


RESTIC_COMMANDS = frozenset(
    [
        "backup",
        "cache",
        "cat",
        "check",
        "copy",
        "diff",
        "dump",
        "find",
        "forget",
        "init",
        "key",
        "list",
        "ls",
        "migrate",
        "mount",
        "prune",
        "rebuild-index",
        "recover",
        "restore",
        "self-update",
        "snapshots",
        "stats",
        "tag",
        "unlock",
        "version",
    ]
)


def restic_command(pid: int) -> str:
    """``restic <subcommand>`` (with ``stats``' mode), from the process's argv; never the environment."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "restic ?"
    for i, arg in enumerate(argv[1:], start=1):
        if arg in RESTIC_COMMANDS:
            extra = " ".join(a for a in argv[i + 1 : i + 4] if a in ("--read-data", "--prune", "config"))
            return f"restic {arg} {extra}".strip()
    return "restic ?"


@dataclass
class ResticRun:
    command: str
    first_seen: float
    last_seen: float


class TreeSampler:
    """Every 50 ms: the RSS of ``kubestash up`` plus all its descendants (task runners, restic), summed, and
    which restic commands run under it, with when they were first and last seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_by_comm: dict[str, float] = {}
        self.samples = 0
        self.restic_runs: dict[int, ResticRun] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def restic_between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Restic runs seen between two ``perf_counter`` times: command, start and seen-running time (±50 ms)."""
        runs = [r for r in list(self.restic_runs.values()) if r.last_seen >= start and r.first_seen <= end]
        return [
            {
                "command": r.command,
                "seen_from_s": round(r.first_seen - start, 2),
                "seen_for_s": round(r.last_seen - r.first_seen + self.interval, 2),
            }
            for r in sorted(runs, key=lambda r: r.first_seen)
        ]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            total = 0.0
            now = time.perf_counter()
            try:
                members = [(self.pid, "kubestash up"), *((p, comm) for p, comm, _ in descendants(self.pid))]
            except OSError:
                continue
            for pid, comm in members:
                try:
                    rss = proc_status_mb(pid, "VmRSS")
                except (OSError, RuntimeError):
                    continue
                total += rss
                if comm == "restic":
                    run = self.restic_runs.get(pid)
                    if run is None:
                        self.restic_runs[pid] = ResticRun(restic_command(pid), now, now)
                    else:
                        run.last_seen = now
                if pid == self.pid:
                    name = "kubestash up"
                elif comm.startswith(("python", "kubestash")):
                    name = "task runner"
                else:
                    name = comm
                self.peak_by_comm[name] = max(self.peak_by_comm.get(name, 0.0), rss)
            self.samples += 1
            self.peak_total_mb = max(self.peak_total_mb, total)


# ---------------------------------------------------------------------- ours
def create(kube: Client, obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    if "kubestash.com" in obj["apiVersion"]:
        by_kind(kind)  # registers the generic resource from_dict decodes to
    kube.create(from_dict(obj))


def world_objects(backend: Path) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "encrypt-secret", "namespace": NAMESPACE},
            "stringData": {"RESTIC_PASSWORD": PASSWORD},
        },
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": "storage", "namespace": NAMESPACE},
            "spec": {
                "storage": {
                    "provider": "local",
                    "local": {"mountPath": "/safe/data", "hostPath": {"path": str(backend)}},
                },
                "default": True,
                "deletionPolicy": "WipeOut",
            },
        },
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "keep-many", "namespace": NAMESPACE},
            "spec": {"successfulSnapshots": {"last": 50}, "failedSnapshots": {"last": 5}},
        },
    ]


def pv_pvc(name: str, path: Path) -> list[dict[str, Any]]:
    pv = f"{NAMESPACE}-{name}"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": NAMESPACE, "name": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}},
                "volumeName": pv,
            },
        },
    ]


def backup_configuration(name: str, pvc: str, directory: str) -> dict[str, Any]:
    return {
        "apiVersion": "core.kubestash.com/v1alpha1",
        "kind": "BackupConfiguration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "target": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": pvc},
            "backends": [
                {"name": "backend", "storageRef": {"name": "storage"}, "retentionPolicy": {"name": "keep-many"}}
            ],
            "sessions": [
                {
                    "name": SESSION,
                    "sessionHistoryLimit": 3,
                    "scheduler": {"schedule": "0 0 1 1 *"},
                    "repositories": [
                        {
                            "name": f"{name}-repo",
                            "backend": "backend",
                            "directory": directory,
                            "encryptionSecret": {"name": "encrypt-secret"},
                        }
                    ],
                    "addon": {"name": "pvc-addon", "tasks": [{"name": "logical-backup"}]},
                }
            ],
        },
    }


def as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = obj.to_dict()
    return out


def get_dict(kube: Client, kind: str, name: str) -> dict[str, Any] | None:
    from lightkube import ApiError

    try:
        return as_dict(kube.get(by_kind(kind), name, namespace=NAMESPACE))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def sessions_of(kube: Client, bc: str) -> list[dict[str, Any]]:
    items = [as_dict(s) for s in kube.list(by_kind("BackupSession"), namespace=NAMESPACE)]
    mine = [s for s in items if ((s.get("spec") or {}).get("invoker") or {}).get("name") == bc]
    return sorted(mine, key=lambda s: str(s["metadata"]["name"]))


def wait_until(check: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)


def session_report(kube: Client, session: dict[str, Any]) -> dict[str, Any]:
    """What the session and its Snapshot say about themselves: durations as the controllers wrote them."""
    status = session.get("status") or {}
    refs = status.get("snapshots") or []
    snap = (get_dict(kube, "Snapshot", str(refs[0]["name"])) if refs else None) or {}
    component = ((snap.get("status") or {}).get("components") or {}).get("dump") or {}
    return {
        "name": session["metadata"]["name"],
        "phase": status.get("phase"),
        "session_duration": status.get("duration"),
        "component_duration": component.get("duration"),
        "restic_summary": [(s or {}).get("summary") or {} for s in component.get("resticStats") or []],
        "snapshot_size": (snap.get("status") or {}).get("size"),
        "integrity": component.get("integrity"),
    }


MARKS = (
    "session_seen",
    "snapshot_listed",
    "component_running",
    "backup_reported",
    "snapshot_succeeded",
    "session_final",
)


def follow(
    kube: Client, find: Callable[[], str | None], started: float, interval: float, timeout: float, what: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """Poll one BackupSession and its Snapshot until the session is final; when each step was first seen.

    Steps, in seconds after ``started``: the session exists; its status lists the Snapshot; the component is
    ``Running`` (the task runner's first report); the component has a restic summary (``restic backup`` is
    done; ``check`` and ``stats`` follow); the Snapshot is ``Succeeded``; the session is final.
    """
    marks: dict[str, float] = {}
    deadline = time.monotonic() + timeout

    def mark(key: str) -> None:
        marks.setdefault(key, time.perf_counter() - started)

    name: str | None = None
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not final within {timeout:.0f}s (seen: {sorted(marks)})")
        if name is None:
            name = find()
        session = get_dict(kube, "BackupSession", name) if name else None
        if session is not None:
            mark("session_seen")
            status = session.get("status") or {}
            refs = status.get("snapshots") or []
            if refs:
                mark("snapshot_listed")
                snap_status = (get_dict(kube, "Snapshot", str(refs[0]["name"])) or {}).get("status") or {}
                component = (snap_status.get("components") or {}).get("dump") or {}
                if component.get("phase") in ("Running", "Succeeded"):
                    mark("component_running")
                if any((s or {}).get("summary") for s in component.get("resticStats") or []):
                    mark("backup_reported")
                if snap_status.get("phase") == "Succeeded":
                    mark("snapshot_succeeded")
                elif snap_status.get("phase") == "Failed":
                    raise RuntimeError(f"{what}: Snapshot Failed: {json.dumps(snap_status)[:2000]}")
            if status.get("phase") in FINAL:
                mark("session_final")
                if status["phase"] != "Succeeded":
                    raise RuntimeError(f"{what}: BackupSession {status['phase']}: {json.dumps(session)[:2000]}")
                return {k: round(marks[k], 3) for k in MARKS if k in marks}, session
        time.sleep(interval)


def descendants(pid: int) -> list[tuple[int, str, float]]:
    """(pid, comm, CPU seconds) of every descendant of ``pid``, from /proc/*/stat."""
    parents: dict[int, list[tuple[int, str, float]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        parents.setdefault(int(fields[1]), []).append((int(entry.name), comm, cpu))
    found: list[tuple[int, str, float]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def wait_tasks_quiet(pid: int, timeout: float = 30.0) -> float:
    """Until no restic runs under ``kubestash up`` and its other descendants (task runners, idle pre-started
    ones included) used no CPU for 0.2 s; the seconds waited. Finished task runners are then reaped, so their
    CPU is in the up process's cutime."""
    started = time.perf_counter()
    last: dict[int, float] = {}
    quiet_since: float | None = None
    while time.perf_counter() - started < timeout:
        tree = descendants(pid)
        now = time.perf_counter()
        cpu = {p: c for p, _, c in tree}
        busy = any(comm == "restic" for _, comm, _ in tree) or any(cpu[p] != last.get(p) for p in cpu)
        last = cpu
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 0.2:
            return round(quiet_since - started, 3)
        time.sleep(0.05)
    return round(time.perf_counter() - started, 3)


def first_backup(
    kube: Client, sampler: TreeSampler, bc: str, pvc: str, directory: str, interval: float
) -> dict[str, Any]:
    """Apply the BackupConfiguration; its automatic initial backup is the first backup."""
    server_pid = sampler.pid
    cpu0 = cpu_times(server_pid)
    applied = time.perf_counter()
    create(kube, backup_configuration(bc, pvc, directory))

    def find() -> str | None:
        found = sessions_of(kube, bc)
        return str(found[0]["metadata"]["name"]) if found else None

    marks, session = follow(kube, find, applied, interval, BACKUP_TIMEOUT_S, f"initial backup of {bc}")
    lingered = wait_tasks_quiet(server_pid)
    return {
        "from_apply_s": marks["session_final"],
        "restic_runs_after_apply": sampler.restic_between(applied, time.perf_counter()),
        "from_session_seen_s": round(marks["session_final"] - marks["session_seen"], 3),
        "steps_after_apply_s": marks,
        "tasks_quiet_after_final_s": lingered,
        "cpu_s": cpu_delta(cpu0, cpu_times(server_pid)),
        **session_report(kube, session),
    }


def incremental_backup(
    kube: Client, sampler: TreeSampler, kubeconfig: Path, bc: str, interval: float
) -> dict[str, Any]:
    """``kubestash trigger <bc> --wait`` as a timed process, while this process follows the session it creates."""
    server_pid = sampler.pid
    before = {str(s["metadata"]["name"]) for s in sessions_of(kube, bc)}
    binary = kubestash_argv("trigger", Path("."))[0]
    argv = [binary, "trigger", bc, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig), "--wait"]
    cpu0 = cpu_times(server_pid)
    result: list[Timed] = []
    started = time.perf_counter()
    thread = threading.Thread(target=lambda: result.append(run_timed(argv)), daemon=True)
    thread.start()

    def find() -> str | None:
        fresh = [str(s["metadata"]["name"]) for s in sessions_of(kube, bc) if s["metadata"]["name"] not in before]
        return fresh[0] if fresh else None

    marks, session = follow(kube, find, started, interval, BACKUP_TIMEOUT_S, f"triggered backup of {bc}")
    thread.join()
    timed = result[0]
    if timed.returncode != 0:
        raise RuntimeError(f"kubestash trigger --wait failed ({timed.returncode}): {timed.stdout}{timed.stderr}")
    lingered = wait_tasks_quiet(server_pid)
    return {
        "trigger_wait_s": round(timed.wall_s, 3),
        "steps_after_cli_start_s": marks,
        "restic_runs_after_cli_start": sampler.restic_between(started, time.perf_counter()),
        "cli_exit_after_session_final_s": round(timed.wall_s - marks["session_final"], 3),
        "cli_cpu_s": round(timed.cpu_s, 2),
        "tasks_quiet_after_final_s": lingered,
        "cpu_s": cpu_delta(cpu0, cpu_times(server_pid)),
        **session_report(kube, session),
    }


def latency_runs(kube: Client, sampler: TreeSampler, runs: int) -> dict[str, Any]:
    """Create a BackupSession directly; time until its Snapshot reads Succeeded (polled every 20 ms)."""
    server_pid = sampler.pid
    bc = get_dict(kube, "BackupConfiguration", SMALL_BC)
    assert bc is not None
    results: list[float] = []
    details: list[dict[str, Any]] = []
    last_second = 0
    cpu0 = cpu_times(server_pid)
    for i in range(runs):
        second = max(int(time.time()), last_second + 1)  # names carry the unix second: one per second at most
        while time.time() < second:
            time.sleep(0.01)
        last_second = second
        manifest = backup_session_manifest(bc, SESSION, second)
        name = str(manifest["metadata"]["name"])
        started = time.perf_counter()
        create(kube, manifest)
        created = time.perf_counter() - started

        def find(name: str = name) -> str | None:
            return name

        marks, session = follow(kube, find, started, LATENCY_POLL_S, 120, f"latency run {name}")
        report = session_report(kube, session)
        results.append(marks["snapshot_succeeded"])
        details.append(
            {
                "create_call_s": round(created, 3),
                **{f"{k}_s": v for k, v in marks.items()},
                "component_duration": report["component_duration"],
                "restic_runs": sampler.restic_between(started, time.perf_counter()),
            }
        )
        log(f"  latency run {i + 1}/{runs}: Snapshot Succeeded after {marks['snapshot_succeeded']:.3f}s")
        wait_tasks_quiet(server_pid)
    return {
        "runs_s": [round(r, 3) for r in results],
        "median_s": round(statistics.median(results), 3) if results else None,
        "max_s": round(max(results), 3) if results else None,
        "runs": details,
        "cpu_s": cpu_delta(cpu0, cpu_times(server_pid)),
    }


def task_runner_import_s() -> float:
    """Median wall time of a fresh interpreter importing what the task runner needs (3 tries)."""
    argv = [sys.executable, "-c", "import kubestash.cli.task, kubestash.tasks.backup, kubestash.engine.restic"]
    return round(statistics.median(run_timed(argv).wall_s for _ in range(3)), 3)


def bench_ours(dataset: Dataset, small: Path, root: Path, latency: int, repeats: int, engine: str) -> dict[str, Any]:
    data_dir = root / "up"
    data_dir.mkdir()
    server = Process("kubestash up", [*kubestash_argv("up", data_dir), "--engine", engine], root / "up.log")
    sampler: TreeSampler | None = None
    try:
        server.start()
        kubeconfig = data_dir / "kubeconfig"
        server.wait_for_file(kubeconfig)
        log(f"kubestash up pid {server.pid}")
        sampler = TreeSampler(server.pid)
        sampler.start()
        kube = Client(config=KubeConfig.from_file(str(kubeconfig)), field_manager="bench")
        for obj in world_objects(root / "backend"):
            create(kube, obj)
        for obj in pv_pvc("dataset", dataset.root) + pv_pvc("small", small):
            create(kube, obj)

        firsts: list[dict[str, Any]] = []
        incrementals: list[dict[str, Any]] = []
        for i in range(repeats):
            # Each repeat: a new BackupConfiguration on the same PVC, into a new repository directory.
            bc = BIG_BC if i == 0 else f"{BIG_BC}-{i}"
            log(f"first backup ({i + 1}/{repeats}): applying {bc}; its initial backup is the first backup")
            first = first_backup(kube, sampler, bc, "dataset", f"/dataset-{i}", SESSION_POLL_S)
            log(f"  first backup Succeeded {first['from_apply_s']:.2f}s after apply ({first['session_duration']})")
            firsts.append(first)

            time.sleep(1.0)  # let the first session's tail (retention, history cleanup) settle
            log(f"incremental ({i + 1}/{repeats}): kubestash trigger {bc} --wait")
            incremental = incremental_backup(kube, sampler, kubeconfig, bc, SESSION_POLL_S)
            log(f"  trigger --wait took {incremental['trigger_wait_s']:.2f}s ({incremental['session_duration']})")
            incrementals.append(incremental)
        first, incremental = firsts[0], incrementals[0]
        if repeats > 1:
            first["repeats"] = {
                k: [f[k] for f in firsts] for k in ("from_session_seen_s", "from_apply_s", "session_duration")
            }
            first.update(
                {k: round(statistics.median(f[k] for f in firsts), 3) for k in ("from_session_seen_s", "from_apply_s")}
            )
            incremental["repeats"] = {k: [f[k] for f in incrementals] for k in ("trigger_wait_s", "session_duration")}
            incremental["trigger_wait_s"] = round(statistics.median(f["trigger_wait_s"] for f in incrementals), 3)

        log("1 MB latency: initial backup of the small PVC, then direct BackupSessions")
        small_first = first_backup(kube, sampler, SMALL_BC, "small", "/small", LATENCY_POLL_S)
        latency_result = latency_runs(kube, sampler, latency) if latency > 0 else {}
        latency_result["initial_backup"] = small_first

        sampler.stop()
        rss = {
            "up_process_hwm_mb": round(proc_status_mb(server.pid, "VmHWM"), 1),
            "up_process_now_mb": round(proc_status_mb(server.pid, "VmRSS"), 1),
            "tree_peak_sampled_mb": round(sampler.peak_total_mb, 1),
            "peak_by_process_sampled_mb": {k: round(v, 1) for k, v in sorted(sampler.peak_by_comm.items())},
            "samples": sampler.samples,
            "how": "VmHWM/VmRSS of the `kubestash up` process from /proc/<pid>/status; the tree peak is the "
            "largest sum of VmRSS over `kubestash up` and all its descendants (task runners, restic), sampled "
            "every 50 ms by walking /proc, so short peaks between samples can be missed",
        }
        cpu_total = cpu_times(server.pid)
        return {
            "first": first,
            "incremental": incremental,
            "latency_1mb": latency_result,
            "rss": rss,
            "cpu_s_total": {k: round(v, 2) for k, v in cpu_total.items()},
            "task_runner_import_s": task_runner_import_s(),
            "repository_bytes": dir_bytes(root / "backend" / "dataset-0"),
            "server_log": {
                "tracebacks": server.log_lines("Traceback"),
                "reconcile_failures": server.log_lines("failed; retrying"),
                "errors": server.log_lines(" ERROR "),
            },
        }
    except BaseException:
        tail = server.log_tail()
        if tail:
            log(f"kubestash up log (tail):\n{tail}")
        raise
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()


# ----------------------------------------------------------------------- run
def _ratio(ours: float | None, ref: float) -> float | None:
    return None if ours is None or ref <= 0 else round(ours / ref, 3)


def restic_version() -> str:
    try:
        return subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "not found"


def run(
    size_mib: int, seed: int, latency: int, repeats: int, engine: str, keep: bool, work_dir: Path | None
) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="kubestash-bench-backup-", dir=work_dir))
    log(f"work dir {root}")
    try:
        log(f"generating the dataset: {size_mib} MiB, seed {seed}")
        dataset = generate_dataset(root / "dataset", size_mib, seed)
        small = root / "small"
        small_bytes = small_tree(small, seed)
        log(f"  {dataset.files} files, {dataset.bytes / MIB:.0f} MiB in {dataset.generate_s:.1f}s")
        os.sync()
        log("reference: plain restic")
        reference = bench_reference(dataset, root, repeats)
        log("ours: kubestash up")
        ours = bench_ours(dataset, small, root, latency, repeats, engine)
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    first_ours = ours["first"]["from_session_seen_s"]
    incremental_ours = ours["incremental"]["trigger_wait_s"]
    latency_max = ours["latency_1mb"].get("max_s")
    latency_median = ours["latency_1mb"].get("median_s")
    ratios = {
        "first_backup": _ratio(first_ours, reference["first_s"]),
        "first_backup_from_apply": _ratio(ours["first"]["from_apply_s"], reference["first_s"]),
        "incremental": _ratio(incremental_ours, reference["incremental_s"]),
        "incremental_vs_warm_cache": _ratio(incremental_ours, reference["incremental_warm_cache_s"]),
    }
    first_ratio, incremental_ratio = ratios["first_backup"], ratios["incremental"]
    ref_cpu = reference["cpu_s"]
    first_cpu, incremental_cpu = ours["first"]["cpu_s"], ours["incremental"]["cpu_s"]
    cpu_ratios = {
        "first_backup": _ratio(first_cpu["self"] + first_cpu["children"], ref_cpu["init"] + ref_cpu["first_backup"]),
        "incremental": _ratio(
            incremental_cpu["self"] + incremental_cpu["children"] + ours["incremental"]["cli_cpu_s"],
            ref_cpu["incremental"],
        ),
    }
    return {
        "benchmark": "backup",
        "engine": engine,
        "repeats": repeats,
        "dataset": {**dataset.describe(), "latency_target_bytes": small_bytes},
        "reference": reference,
        "ours": ours,
        "ratio_vs_reference": ratios,
        "cpu_ratio_vs_reference": cpu_ratios,
        "targets": TARGETS,
        "passed": {
            "first_backup_ratio": first_ratio is not None and first_ratio <= TARGETS["first_backup_ratio"],
            "incremental_ratio": incremental_ratio is not None and incremental_ratio <= TARGETS["incremental_ratio"],
            "latency_1mb_s": latency_median is not None and latency_median <= TARGETS["latency_1mb_s"],
            "latency_1mb_s_max": latency_max is not None and latency_max <= TARGETS["latency_1mb_s"],
        },
        "notes": [
            "Cache: our task runner gives each restic run `--cache-dir <fresh scratch dir>/restic-cache` (enableCache "
            "defaults to true, but the scratch dir is new per run), so every run starts cold; the reference uses a "
            "fresh empty --cache-dir per run too. `incremental_warm_cache_s` is plain restic reusing its cache.",
            "first_backup ratio: ours = from the bench first seeing the initial BackupSession (polled every "
            f"{SESSION_POLL_S}s) to first seeing it Succeeded; reference = restic init + first backup. "
            "`first_backup_from_apply` also counts the BackupConfiguration becoming Ready and the Repository init.",
            "incremental ratio: ours = wall time of the `kubestash trigger --wait` process (CLI start-up, create, "
            "its status polling, every 0.05 s); reference = the second plain restic backup.",
            "latency: BackupSession created directly with lightkube (the same manifest `trigger` sends); time from "
            f"just before the create call until a poll (every {LATENCY_POLL_S * 1000:.0f} ms) reads the Snapshot's "
            "status.phase Succeeded. Judged on the median; `latency_1mb_s_max` judges the worst run.",
            "`reference.other_restic_runs_s` times alone restic commands a task may run around a backup (`cat "
            "config`, `check`, `stats --mode raw-data`); `restic_runs*` show which ones ours actually ran.",
            "The dataset is in the page cache for both sides (it was just written); the reference runs first. "
            "With --repeats N both sides repeat first + incremental N times (ours: a new BackupConfiguration and "
            "repository directory per repeat) and the ratios use medians; `repeats` lists each value.",
            "The RetentionPolicy keeps 50 snapshots, so no forget/prune runs during the bench.",
            "cpu_s: `self` is the `kubestash up` process (API server, controllers, executor); `children` is every "
            "reaped descendant (task runners and the restic runs they made), from /proc/<pid>/stat. "
            "cpu_ratio_vs_reference divides ours (self + children, plus the CLI for the incremental) by the "
            "reference restic runs' CPU: steadier than wall time when other work shares the machine.",
            "restic_runs*: restic processes under `kubestash up` seen by a 50 ms /proc sampler (subcommand from "
            "argv; start and duration accurate to about 50 ms).",
        ],
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "restic": restic_version(),
            "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "duration_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="dataset size in MiB (default 1024)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    parser.add_argument("--latency-runs", type=int, default=5, help="1 MB BackupSessions to time (default 5)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="first + incremental backups per side; medians are judged (default 1)"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default=DEFAULT_ENGINE,
        help=f"kubestash up --engine (default {DEFAULT_ENGINE}, as kubestash up's)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (dataset, repositories, logs)")
    parser.add_argument("--work-dir", type=Path, help="where to create the work directory (default: the tmp dir)")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args()
    if args.size_mib < 1 or args.latency_runs < 0 or args.repeats < 1:
        parser.error("--size-mib and --repeats must be at least 1, --latency-runs at least 0")
    run_and_print(
        lambda: run(args.size_mib, args.seed, args.latency_runs, args.repeats, args.engine, args.keep, args.work_dir),
        args.out,
    )


if __name__ == "__main__":
    main()
