"""Benchmark the native restic-format engine against restic 0.14 itself, same dataset, same machine, same run.

Run with the project's virtualenv::

    .venv/bin/python bench/engine.py [--size-mib 1024] [--seed 1] [--keep] [--out FILE]

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
reads trees from the repository). Throughput = dataset bytes / wall seconds. Ratios are native / restic.
Restore and ``check --read-data`` are not measured yet.

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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

PASSWORD = "bench-only-not-a-secret"
HOST = "host-0"
MIB = 1024 * 1024
TARGETS = {"first_backup_ratio": 2.0, "incremental_ratio": 1.5, "rss_ratio_max": 1.0}


def log(message: str) -> None:
    print(f"[engine-bench] {message}", file=sys.stderr, flush=True)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process.

    The peak RSS comes from GNU ``time`` (``wait4`` of its own child). Not ``os.wait4`` here: Linux carries
    the high-water mark of the forking process (this one, big after generating the dataset) over ``exec``
    into the child's ``ru_maxrss``, which would put a floor under both engines' numbers.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        started = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], env=env, stdout=out, stderr=err, check=False
        )
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        peak_kib = int(Path(rss.name).read_text().split()[-1])
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}): {stderr[-2000:]}")
    return elapsed, peak_kib // 1024, stdout


def restic_env(repo: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo), "RESTIC_CACHE_DIR": str(cache)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return env


def worker_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", *args]


def native_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def worker(args: list[str]) -> None:
    """The native side of one step, in its own process: ``init REPO`` or ``backup REPO PATH``."""
    from kubestash.engine.native.backup import backup
    from kubestash.engine.native.init import init_repository
    from kubestash.engine.native.repository import NativeRepository
    from kubestash.engine.native.store import LocalStore

    async def main() -> dict[str, Any]:
        store = LocalStore(Path(args[1]))
        if args[0] == "init":
            repo = await init_repository(store, PASSWORD)
            return {"id": repo.config.id}
        repo = await NativeRepository.open(store, PASSWORD)
        summary = await backup(repo, [args[2]], host=HOST, parent="auto")
        return asdict(summary)

    print(json.dumps(asyncio.run(main())))


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


def pair(
    step: str, size: int, restic_run: tuple[float, int, str], native_run: tuple[float, int, str]
) -> dict[str, Any]:
    (r_s, r_rss, _), (n_s, n_rss, n_out) = restic_run, native_run
    summary = json.loads(n_out)
    result = {
        "restic_s": round(r_s, 2),
        "native_s": round(n_s, 2),
        "restic_mb_s": round(size / r_s / 1e6, 1),
        "native_mb_s": round(size / n_s / 1e6, 1),
        "ratio": round(r_s / n_s, 2),
        "restic_rss_mib": r_rss,
        "native_rss_mib": n_rss,
        "rss_ratio": round(n_rss / r_rss, 2),
        "native_in_process_s": round(summary["total_duration"], 2),
        "native_files_read": summary["files_read"],
        "native_data_added_mib": round(summary["data_added"] / MIB, 1),
    }
    log(f"{step}: {json.dumps(result)}")
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from backup import generate_dataset  # not at module level: the --worker process must not import it

    work = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    try:
        data = work / "data"
        log(f"generating {args.size_mib} MiB in {data}")
        dataset = generate_dataset(data, args.size_mib, args.seed)
        size = dataset.bytes
        r_repo, n_repo, cache = work / "restic-repo", work / "native-repo", work / "restic-cache"
        renv, nenv = restic_env(r_repo, cache), native_env()
        restic_backup = ["restic", "backup", "--json", "--host", HOST, "--", str(data)]

        r_init = timed(["restic", "init", "--repository-version", "2"], renv)
        n_init = timed(worker_argv("init", str(n_repo)), nenv)
        steps: dict[str, Any] = {}
        log("first backup")
        steps["first"] = pair(
            "first", size, timed(restic_backup, renv), timed(worker_argv("backup", str(n_repo), str(data)), nenv)
        )
        log("unchanged incremental")
        steps["unchanged"] = pair(
            "unchanged", size, timed(restic_backup, renv), timed(worker_argv("backup", str(n_repo), str(data)), nenv)
        )
        changed = change_files(data, args.seed)
        log(f"changed {changed} files; incremental")
        steps["changed_5pct"] = pair(
            "changed_5pct", size, timed(restic_backup, renv), timed(worker_argv("backup", str(n_repo), str(data)), nenv)
        )
        steps["changed_5pct"]["files_changed"] = changed
        log("restic check --read-data of the native repository")
        timed(["restic", "check", "--read-data"], restic_env(n_repo, cache / "check"))

        incremental = min(steps["unchanged"]["ratio"], steps["changed_5pct"]["ratio"])
        rss = max(s["rss_ratio"] for s in steps.values())
        report = {
            "bench": "engine",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "restic_version": subprocess.run(
                ["restic", "version"], check=False, capture_output=True, text=True
            ).stdout.strip(),
            "dataset": dataset.describe(),
            "init_s": {"restic": round(r_init[0], 2), "native": round(n_init[0], 2)},
            "backup": steps,
            "restore": "not yet",
            "check_read_data": "not yet (restic check --read-data of the native repository passed)",
            "repository_mib": {
                "restic": round(sum(f.stat().st_size for f in r_repo.rglob("*") if f.is_file()) / MIB, 1),
                "native": round(sum(f.stat().st_size for f in n_repo.rglob("*") if f.is_file()) / MIB, 1),
            },
            "targets": TARGETS,
            "results": {
                "first_backup_ratio": steps["first"]["ratio"],
                "incremental_ratio": incremental,
                "rss_ratio": rss,
                "first_backup_met": steps["first"]["ratio"] >= TARGETS["first_backup_ratio"],
                "incremental_met": incremental >= TARGETS["incremental_ratio"],
                "rss_met": rss <= TARGETS["rss_ratio_max"],
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
