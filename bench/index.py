"""Memory and time of the native engine's index for a large repository, against restic 0.14 in the same run.

Run with the project's virtualenv::

    .venv/bin/python bench/index.py [--blobs 1000000] [--lookups 200000] [--out FILE]

A repository is created (``kubestash.engine.native.init``) and given index files for ``--blobs`` random
blobs (50,000 per index file, 16 per pack, as a backup of ~1 MiB chunks into 16 MiB packs would write;
no pack files: only the index is measured). Then, each in a child process under GNU ``time`` (peak RSS of
that process):

1. *restic*: ``restic list blobs`` (loads the whole index and prints every blob: restic's index memory);
2. *native_memory*: open with ``KUBESTASH_INDEX=memory`` (every index file parsed into a dict), then
   ``--lookups`` lookups, half of indexed blobs, half of absent ones;
3. *native_disk_cold*: the same with ``KUBESTASH_INDEX=disk`` and an empty cache directory (every index file
   parsed into the SQLite cache);
4. *native_disk_warm*: again, the cache now filled (nothing parsed).

For the native runs the child reports the open time and the mean lookup time. Ratios: native peak RSS /
restic's (below 1: less memory), and restic's wall time / native's (above 1: faster).

5. *prune plan*: ``restic prune --dry-run`` against the native ``prune(dry_run=True)`` with the index in
   memory and on disk (warm cache). There is no snapshot, so every blob is unused and every pack is missing
   (no pack files): the plan visits every pack's blobs, which is what prune's memory grows with.

One JSON document goes to stdout (and to ``--out``); progress to stderr. 1,000,000 blobs take a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import PASSWORD, log, timed

PER_FILE = 50_000
PER_PACK = 16


def build(repo: Path, blobs: int, seed: int) -> list[str]:
    """A repository whose index lists ``blobs`` random blobs; a sample of their ids."""
    from kubestash.engine.native.files import encode_unpacked, storage_id
    from kubestash.engine.native.init import init_repository
    from kubestash.engine.native.pack import PackedBlob
    from kubestash.engine.native.packer import Pack, index_json
    from kubestash.engine.native.store import LocalStore

    opened = asyncio.run(init_repository(LocalStore(repo), PASSWORD))
    rng = random.Random(seed)
    sample: list[str] = []
    (repo / "index").mkdir(exist_ok=True)
    for start in range(0, blobs, PER_FILE):
        packs = []
        for first in range(start, min(blobs, start + PER_FILE), PER_PACK):
            entries = []
            for n in range(first, min(blobs, start + PER_FILE, first + PER_PACK)):
                blob_id = rng.randbytes(32).hex()
                if n % max(1, blobs // 1000) == 0:
                    sample.append(blob_id)
                offset = (n - first) * 1_000_000
                entries.append(PackedBlob(blob_id, "data", offset, 700_000, 1_000_000))
            packs.append(Pack(rng.randbytes(32).hex(), b"", tuple(entries)))
        data = encode_unpacked(opened.key, index_json(packs), opened.config.version)
        (repo / "index" / storage_id(data)).write_bytes(data)
    return sample


def prune_worker(repo: str) -> None:
    """A dry-run prune plan; print its seconds and the number of blobs it would remove."""
    from kubestash.engine.native.prune import prune
    from kubestash.engine.native.repository import NativeRepository
    from kubestash.engine.native.store import LocalStore

    async def plan() -> int:
        opened = await NativeRepository.open(LocalStore(Path(repo)), PASSWORD)
        started = time.perf_counter()
        report = await prune(opened, dry_run=True)
        print(json.dumps({"plan_s": time.perf_counter() - started, "removed": report.blobs_removed}))
        return report.blobs_removed

    asyncio.run(plan())


def worker(repo: str, sample_file: str, lookups: int) -> None:
    """Open the repository, look blobs up; print open seconds, mean lookup µs and what was found."""
    from kubestash.engine.native.repository import NativeRepository
    from kubestash.engine.native.store import LocalStore

    sample = json.loads(Path(sample_file).read_text())
    rng = random.Random(0)
    present = [rng.choice(sample) for _ in range(lookups // 2)]
    absent = [rng.randbytes(32).hex() for _ in range(lookups - len(present))]
    started = time.perf_counter()
    opened = asyncio.run(NativeRepository.open(LocalStore(Path(repo)), PASSWORD))
    open_s = time.perf_counter() - started
    index = opened.index
    started = time.perf_counter()
    found = sum(1 for blob_id in present if index.get(blob_id) is not None)
    found_absent = sum(1 for blob_id in absent if blob_id in index)
    lookup_us = (time.perf_counter() - started) / lookups * 1e6
    print(json.dumps({"open_s": open_s, "lookup_us": lookup_us, "found": found, "found_absent": found_absent}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blobs", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=3, metavar=("REPO", "SAMPLE", "LOOKUPS"), help=argparse.SUPPRESS)
    parser.add_argument("--prune-worker", metavar="REPO", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    if args.prune_worker:
        prune_worker(args.prune_worker)
        return

    root = Path(tempfile.mkdtemp(prefix="kubestash-bench-index-"))
    try:
        repo, cache = root / "repo", root / "cache"
        log(f"writing index files for {args.blobs:,} blobs")
        sample = build(repo, args.blobs, args.seed)
        (root / "sample.json").write_text(json.dumps(sample))
        index_mib = sum(p.stat().st_size for p in (repo / "index").iterdir()) / (1 << 20)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBESTASH_INDEX", "RESTIC_"))}
        base.pop("PYTHONDONTWRITEBYTECODE", None)

        log("restic list blobs")
        restic_env = {**base, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(root / "restic-cache")}
        r_s, r_rss, out, _ = timed(["restic", "-r", str(repo), "--no-lock", "list", "blobs"], restic_env)
        assert out.count("\n") == args.blobs, "restic did not list every blob"
        results: dict[str, object] = {"restic": {"wall_s": round(r_s, 2), "rss_mib": r_rss}}

        argv = [sys.executable, __file__, "--worker", str(repo), str(root / "sample.json"), str(args.lookups)]
        for name, mode in (("native_memory", "memory"), ("native_disk_cold", "disk"), ("native_disk_warm", "disk")):
            log(name)
            env = {**base, "KUBESTASH_INDEX": mode, "KUBESTASH_CACHE_DIR": str(cache)}
            wall, rss, out, _ = timed(argv, env)
            report = json.loads(out)
            assert report["found"] == args.lookups // 2 and report["found_absent"] == 0, report
            results[name] = {
                "wall_s": round(wall, 2),
                "open_s": round(report["open_s"], 2),
                "lookup_us": round(report["lookup_us"], 2),
                "rss_mib": rss,
                "rss_ratio": round(rss / r_rss, 2),
                "open_vs_restic_list": round(r_s / report["open_s"], 2),
            }
        cache_mib = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / (1 << 20)

        log("restic prune --dry-run")
        argv = ["restic", "-r", str(repo), "prune", "--dry-run"]
        r_s, r_rss, _, _ = timed(argv, restic_env)
        prune_results: dict[str, object] = {"restic": {"wall_s": round(r_s, 2), "rss_mib": r_rss}}
        for name, mode in (("native_memory", "memory"), ("native_disk", "disk")):
            log(f"prune plan, {name}")
            env = {**base, "KUBESTASH_INDEX": mode, "KUBESTASH_CACHE_DIR": str(cache)}
            wall, rss, out, _ = timed([sys.executable, __file__, "--prune-worker", str(repo)], env)
            report = json.loads(out)
            assert report["removed"] == args.blobs, report
            prune_results[name] = {
                "wall_s": round(wall, 2),
                "plan_s": round(report["plan_s"], 2),
                "rss_mib": rss,
                "rss_ratio": round(rss / r_rss, 2),
                "speed_ratio": round(r_s / wall, 2),
            }
        document = {
            "bench": "native index",
            "blobs": args.blobs,
            "index_files_mib": round(index_mib, 1),
            "cache_mib": round(cache_mib, 1),
            "lookups": args.lookups,
            "results": results,
            "prune_dry_run": prune_results,
        }
        text = json.dumps(document, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
