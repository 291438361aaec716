"""Benchmark the native restic-format engine against restic 0.14 itself, same dataset, same machine, same run.

Run with the project's virtualenv::

    .venv/bin/python bench/engine.py [--size-mib 1024] [--seed 1] [--repeat 1] [--keep] [--out FILE]

The seeded dataset of ``bench/backup.py`` (large random files, compressible text, many small files) is
backed up into two fresh local repositories, one by ``restic`` and one by the native engine:

1. *first*: ``init`` + the first backup (init timed separately; both derive a ~0.3-0.5 s scrypt key);
2. *unchanged*: a second backup of the unchanged dataset (restic finds its parent itself; native ``--parent
   auto``), so neither reads file contents;
3. *changed_5pct*: 5 % of the files (seeded choice) get 4 KiB overwritten at a random offset, then both back
   up again.

Every backup runs as a child process (the native one as ``python bench/engine.py --worker ...``) under
GNU ``/usr/bin/time``, timed by wall clock, with that very process's peak RSS, so the numbers compare.
restic keeps its cache directory between its runs (its normal use; the native engine has no cache and
reads trees from the repository). Throughput = dataset bytes / wall seconds. Ratios are restic's time /
native's time (above 1: native is faster); ``rss_ratio`` is native / restic peak RSS (GNU ``time``: the
largest single process), ``tree_pss_ratio`` the same for the peak summed PSS of each engine's whole process
tree, sampled every 50 ms (the native backup forks worker processes; PSS splits the pages they share with
their parent instead of counting them twice). Both are in ``results`` (the largest over the backups, the
restore and the check); the memory target applies to both.

4. *restore*: each engine restores its own latest snapshot into an empty directory (``restic restore
   latest --target``, native :func:`~kubestash.engine.native.restore.restore`). Before each restore the
   page cache is dropped if this process may (``/proc/sys/vm/drop_caches``, root only), else the repository
   files are evicted with ``posix_fadvise(DONTNEED)`` (best effort, same for both), so both read the
   repository under the same conditions. Nothing is deleted between the two restores (ext4 makes creating
   files right after deleting thousands slow: it skips recently freed inodes one by one). How long creating
   2000 empty files takes just before is reported (``create_2000_files_s``): above ~0.2 s the filesystem is
   still busy with deletions made before the bench (a previous run's trees), and the restore ratio is low.
5. *check_read_data*: ``restic check --read-data`` of restic's repository against the native
   :func:`~kubestash.engine.native.check.check` with ``read_data=True`` of the native one (each its own,
   same cache eviction first). ``restic check --read-data`` of the *native* repository is run as well, as a
   correctness gate (the bench fails if it does not pass), untimed.

``--repeat N`` runs every step N times per engine, alternating which engine goes first, and reports the median
time of each (ratios of medians; each run's time in ``*_runs_s``) and the largest memory of any run: restic's
own first backup varies by 15-25 % from run to run on this machine, which one run per step turns into the
ratio. Each round's first backup gets fresh repositories; the later steps go on in the last round's, each
5 %-changed round changes its own seeded 5 % first, and every restore gets its own target directory.

``--size-mib 64`` gives a quick iteration run (small files scale down in proportion).

One JSON document goes to stdout (and to ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

PASSWORD = "bench-only-not-a-secret"
HOST = "host-0"
MIB = 1024 * 1024
TARGETS = {"first_backup_ratio": 2.0, "incremental_ratio": 1.5, "restore_ratio": 1.5, "rss_ratio_max": 1.0}


def log(message: str) -> None:
    print(f"[engine-bench] {message}", file=sys.stderr, flush=True)


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                queue += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the summed PSS of a process's descendants (not the process itself: ``/usr/bin/time``) every
    ``interval`` seconds: the memory of an engine that runs as several processes (forked workers share pages
    with their parent, which PSS splits between them instead of counting them twice)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kib = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = _descendants(self.pid)[1:]
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in pids))
            self.done.wait(self.interval)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str, int]:
    """Wall seconds, peak RSS (MiB), stdout and peak summed PSS of the process tree (MiB) of one child process.

    The peak RSS comes from GNU ``time`` (``wait4`` of its own child). Not ``os.wait4`` here: Linux carries
    the high-water mark of the forking process (this one, big after generating the dataset) over ``exec``
    into the child's ``ru_maxrss``, which would put a floor under both engines' numbers. For a child with
    children of its own (the native engine's worker processes) that is the largest single process, hence
    the sampled tree PSS (:class:`TreeMemory`) next to it.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        started = time.perf_counter()
        child = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], env=env, stdout=out, stderr=err)
        sampler = TreeMemory(child.pid)
        sampler.start()
        returncode = child.wait()
        elapsed = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        peak_kib = int(Path(rss.name).read_text().split()[-1])
    if returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({returncode}): {stderr[-2000:]}")
    return elapsed, peak_kib // 1024, stdout, sampler.peak_kib // 1024


def restic_env(repo: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo), "RESTIC_CACHE_DIR": str(cache)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return env


def worker_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", *args]


def native_env() -> dict[str, str]:
    """The native steps' environment: ``src`` importable, and bytecode cached as an installed package has it
    (``init`` writes it; a shell's ``PYTHONDONTWRITEBYTECODE`` would make every step compile every module)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def worker(args: list[str]) -> None:
    """The native side of one step, in its own process: ``init REPO``, ``backup REPO PATH``, ``restore REPO
    TARGET`` or ``check REPO``."""
    from kubestash.engine.native.backup import backup
    from kubestash.engine.native.check import check
    from kubestash.engine.native.init import init_repository
    from kubestash.engine.native.repository import NativeRepository
    from kubestash.engine.native.restore import restore
    from kubestash.engine.native.store import LocalStore

    async def main() -> dict[str, Any]:
        store = LocalStore(Path(args[1]))
        started = time.perf_counter()
        if args[0] == "init":
            repo = await init_repository(store, PASSWORD)
            return {"id": repo.config.id}
        repo = await NativeRepository.open(store, PASSWORD)
        if args[0] == "restore":
            files, size = await restore(repo, "latest", Path(args[2]))
            return {"files": files, "bytes": size, "total_duration": time.perf_counter() - started}
        if args[0] == "check":
            report = await check(repo, read_data=True)
            if not report.ok:
                raise SystemExit(f"native check failed: {report.errors[:5]}")
            return {"ok": report.ok, "total_duration": time.perf_counter() - started}
        summary = await backup(repo, [args[2]], host=HOST, parent="auto")
        return asdict(summary)

    print(json.dumps(asyncio.run(main())))


def creation_probe(folder: Path, count: int = 2000) -> float:
    """Seconds to create ``count`` empty files in ``folder`` (kept: deleting them would slow the next creations).

    Restores create thousands of files, and on ext4 without a journal (this project's VMs) creating a file
    within minutes of deleting many others scans those "recently deleted" inodes one by one: the same
    restore's file creations then cost several times their usual CPU, for restic and the native engine alike,
    which pulls the ratio towards 1. Reported with the restore, so a run taken in that state shows it (quiet:
    ~0.05 s; right after deleting a previous run's trees: 0.4-1.2 s)."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for i in range(count):
        os.close(os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return round(time.perf_counter() - started, 3)


def change_files(root: Path, seed: int, fraction: float = 0.05) -> int:
    """Overwrite 4 KiB at a random offset in ``fraction`` of the files (seeded); how many were changed."""
    rng = random.Random(seed + 7)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    chosen = rng.sample(files, max(1, round(len(files) * fraction)))
    for path in chosen:
        size = path.stat().st_size
        block = rng.randbytes(min(4096, size))
        with path.open("r+b") as f:
            f.seek(rng.randrange(max(1, size - len(block) + 1)))
            f.write(block)
    return len(chosen)


def evict(*roots: Path) -> str:
    """Make the next run read ``roots`` from disk (as far as this process may): how it was done."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        pass
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return "fadvise_dontneed"


Run = tuple[float, int, str, int]
"""One timed child process: wall seconds, peak RSS (MiB), stdout, peak tree PSS (MiB)."""


def pair(step: str, size: int, restic_runs: list[Run], native_runs: list[Run]) -> dict[str, Any]:
    """Both engines' runs of one step: the median time of each (its ratio), the largest memory of each."""
    r_s, n_s = statistics.median(r[0] for r in restic_runs), statistics.median(n[0] for n in native_runs)
    r_rss, n_rss = max(r[1] for r in restic_runs), max(n[1] for n in native_runs)
    r_pss, n_pss = max(r[3] for r in restic_runs), max(n[3] for n in native_runs)
    summaries = [json.loads(n[2]) for n in native_runs]
    summary = summaries[-1]
    result = {
        "restic_s": round(r_s, 2),
        "native_s": round(n_s, 2),
        "restic_mb_s": round(size / r_s / 1e6, 1),
        "native_mb_s": round(size / n_s / 1e6, 1),
        "ratio": round(r_s / n_s, 2),
        "restic_rss_mib": r_rss,
        "native_rss_mib": n_rss,
        "rss_ratio": round(n_rss / r_rss, 2),
        "restic_tree_pss_mib": r_pss,
        "native_tree_pss_mib": n_pss,
        "tree_pss_ratio": round(n_pss / max(1, r_pss), 2),
        "native_in_process_s": round(statistics.median(s["total_duration"] for s in summaries), 2),
    }
    if len(native_runs) > 1:
        result["restic_runs_s"] = [round(r[0], 2) for r in restic_runs]
        result["native_runs_s"] = [round(n[0], 2) for n in native_runs]
    if "files_read" in summary:
        result["native_files_read"] = summary["files_read"]
        result["native_data_added_mib"] = round(summary["data_added"] / MIB, 1)
    log(f"{step}: {json.dumps(result)}")
    return result


def rounds(count: int, restic: Callable[[int], Run], native: Callable[[int], Run]) -> tuple[list[Run], list[Run]]:
    """``count`` runs of each engine, alternating which goes first (neither always meets the page cache as the
    other left it)."""
    restic_runs: list[Run] = []
    native_runs: list[Run] = []
    for i in range(count):
        if i % 2:
            native_runs.append(native(i))
            restic_runs.append(restic(i))
        else:
            restic_runs.append(restic(i))
            native_runs.append(native(i))
    return restic_runs, native_runs


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        from kubestash.cli.main import leave

        worker(sys.argv[2:])
        leave(0)  # as the command line leaves: without the interpreter's finalization
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="runs of every step per engine (medians reported)")
    args = parser.parse_args()
    from backup import generate_dataset  # not at module level: the --worker process must not import it

    work = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    try:
        data = work / "data"
        log(f"generating {args.size_mib} MiB in {data}")
        dataset = generate_dataset(data, args.size_mib, args.seed)
        size = dataset.bytes
        cache = work / "restic-cache"
        restic_backup = ["restic", "backup", "--json", "--host", HOST, "--", str(data)]
        repos: list[tuple[Path, Path]] = []
        inits: list[tuple[Run, Run]] = []

        def first(engine: str, i: int) -> Run:
            """A fresh repository per round (a first backup needs an empty one), initialised untimed here."""
            if len(repos) <= i:
                repos.append((work / f"restic-repo-{i}", work / f"native-repo-{i}"))
                r_repo, n_repo = repos[i]
                inits.append(
                    (
                        timed(["restic", "init", "--repository-version", "2"], restic_env(r_repo, cache)),
                        timed(worker_argv("init", str(n_repo)), native_env()),
                    )
                )
            r_repo, n_repo = repos[i]
            if engine == "restic":
                return timed(restic_backup, restic_env(r_repo, cache))
            return timed(worker_argv("backup", str(n_repo), str(data)), native_env())

        steps: dict[str, Any] = {}
        log(f"first backup x{args.repeat}")
        steps["first"] = pair("first", size, *rounds(args.repeat, partial(first, "restic"), partial(first, "native")))
        r_repo, n_repo = repos[-1]  # the later steps go on in the last round's repositories
        renv, nenv = restic_env(r_repo, cache), native_env()
        changed: dict[int, int] = {}

        def incremental(engine: str, change: bool, i: int) -> Run:
            """A backup into the last round's repositories; with ``change``, round ``i`` first changes 5 % of
            the files (its own seeded choice), once, before whichever engine goes first."""
            if change and i not in changed:
                changed[i] = change_files(data, args.seed + i)
            if engine == "restic":
                return timed(restic_backup, renv)
            return timed(worker_argv("backup", str(n_repo), str(data)), nenv)

        for step, change in (("unchanged", False), ("changed_5pct", True)):
            log(f"{step} incremental x{args.repeat}")
            runs = rounds(args.repeat, partial(incremental, "restic", change), partial(incremental, "native", change))
            steps[step] = pair(step, size, *runs)
        steps["changed_5pct"]["files_changed"] = round(statistics.median(changed.values()))
        log("restic check --read-data of the native repository")
        timed(["restic", "check", "--read-data"], restic_env(n_repo, cache / "check"))

        log(f"restore x{args.repeat}")
        evictions: set[str] = set()

        def restore(engine: str, i: int) -> Run:
            # Every restored tree stays until the end: deleting one just before the next restore made ext4 scan
            # its thousands of "recently deleted" inodes on every file creation (measured: several seconds).
            evictions.add(evict(r_repo if engine == "restic" else n_repo))
            target = work / f"{engine}-restore-{i}"
            if engine == "restic":
                return timed(["restic", "restore", "latest", "--target", str(target)], renv)
            return timed(worker_argv("restore", str(n_repo), str(target)), nenv)

        probe = creation_probe(work / "creation-probe")
        if probe > 0.2:
            log(f"creating 2000 files took {probe} s: the filesystem is still busy with recent deletions")
        restored = pair("restore", size, *rounds(args.repeat, partial(restore, "restic"), partial(restore, "native")))
        restored["cache_eviction"] = ",".join(sorted(evictions))
        restored["create_2000_files_s"] = probe
        log(f"check --read-data x{args.repeat}")

        def check(engine: str, i: int) -> Run:
            evict(r_repo if engine == "restic" else n_repo)
            if engine == "restic":
                return timed(["restic", "check", "--read-data"], renv)
            return timed(worker_argv("check", str(n_repo)), nenv)

        checked = pair(
            "check_read_data", size, *rounds(args.repeat, partial(check, "restic"), partial(check, "native"))
        )

        incremental_ratio = min(steps["unchanged"]["ratio"], steps["changed_5pct"]["ratio"])
        rss = max(s["rss_ratio"] for s in [*steps.values(), restored, checked])
        pss = max(s["tree_pss_ratio"] for s in [*steps.values(), restored, checked])
        report = {
            "bench": "engine",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "restic_version": subprocess.run(
                ["restic", "version"], check=False, capture_output=True, text=True
            ).stdout.strip(),
            "dataset": dataset.describe(),
            "init_s": {
                "restic": round(statistics.median(r[0] for r, _ in inits), 2),
                "native": round(statistics.median(n[0] for _, n in inits), 2),
            },
            "repeat": args.repeat,
            "backup": steps,
            "restore": restored,
            "check_read_data": {**checked, "restic_check_of_native_repository": "passed"},
            "repository_mib": {
                "restic": round(sum(f.stat().st_size for f in r_repo.rglob("*") if f.is_file()) / MIB, 1),
                "native": round(sum(f.stat().st_size for f in n_repo.rglob("*") if f.is_file()) / MIB, 1),
            },
            "targets": TARGETS,
            "results": {
                "first_backup_ratio": steps["first"]["ratio"],
                "incremental_ratio": incremental_ratio,
                "restore_ratio": restored["ratio"],
                "rss_ratio": rss,
                "tree_pss_ratio": pss,
                "first_backup_met": steps["first"]["ratio"] >= TARGETS["first_backup_ratio"],
                "incremental_met": incremental_ratio >= TARGETS["incremental_ratio"],
                "restore_met": restored["ratio"] >= TARGETS["restore_ratio"],
                "rss_met": rss <= TARGETS["rss_ratio_max"],
                "tree_pss_met": pss <= TARGETS["rss_ratio_max"],
            },
        }
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
