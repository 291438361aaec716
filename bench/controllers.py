"""Benchmark the controllers: how long until 1,000 BackupStorages and Repositories are all Ready.

Run with the project's virtualenv::

    .venv/bin/python bench/controllers.py [--storages 500] [--repositories 500] [--out FILE]

``kubestash up`` (the bundled API server plus the controllers, one process) runs as a subprocess in a
temporary data directory, exactly as users start it: HTTPS with its own CA and a bearer token, read back
from the kubeconfig it writes. The bench creates a namespace, the Secret ``enc`` (``RESTIC_PASSWORD``),
``--storages`` BackupStorages (provider local, each with its own hostPath directory under the temporary
directory) and then ``--repositories`` Repositories (round-robin over the storages, unique paths), 32
requests in flight. It lists both kinds every 0.5 s until every object has ``status.phase: Ready``, or
gives up after 180 s and reports how many were.

The *reference* is the least any controller must do to make those objects Ready, measured in the same
run: a plain ``kubestash apiserver`` (no controllers) in a fresh data directory, the same create loop,
then, from this process with 32 in flight, for each object write its marker file (``metadata.yaml`` for a
storage, ``<path>/repository.yaml`` for a repository, fsynced) and merge-patch ``status.phase: Ready``.
``ratio_vs_reference`` says how far the controllers are from that floor on this machine, and stays
comparable between machines where absolute times do not.

One JSON document goes to stdout (and to ``--out``); progress goes to stderr.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from common import (
    GROUP_VERSION,
    NAMESPACE,
    Endpoint,
    Process,
    kubestash_argv,
    log,
    proc_status_mb,
    request,
    run_and_print,
)

CONCURRENCY = 32
POLL_INTERVAL = 0.5
READY_TIMEOUT = 180.0
TARGET: dict[str, float] = {"all_ready_s": 60}

REFERENCE_DESCRIPTION = (
    "The floor of the controllers' work, same objects, same machine, same run: a plain `kubestash apiserver` "
    "(no controllers) in a fresh data directory; the same create loop (32 in flight); then, from the bench "
    "process with 32 in flight, per object one small marker file written and fsynced into its backend "
    "directory (metadata.yaml per storage, <path>/repository.yaml per repository) and one merge-patch of "
    "status.phase=Ready on the status subresource. `all_ready_s` runs from the first create until the last "
    "patch is acknowledged. No watches, caches, finalizers, conditions, Events or backend listing."
)


def storage_name(i: int) -> str:
    return f"storage-{i:04d}"


def repository_name(i: int) -> str:
    return f"repo-{i:04d}"


def storage_dir(backends: Path, i: int) -> Path:
    return backends / storage_name(i)


def backup_storage(i: int, backends: Path) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "BackupStorage",
        "metadata": {"name": storage_name(i), "namespace": NAMESPACE},
        "spec": {
            "storage": {
                "provider": "local",
                "local": {"mountPath": "/safe/data", "hostPath": {"path": str(storage_dir(backends, i))}},
            },
            "deletionPolicy": "Delete",
        },
    }


def repository(i: int, storages: int) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Repository",
        "metadata": {"name": repository_name(i), "namespace": NAMESPACE},
        "spec": {
            "storageRef": {"name": storage_name(i % storages), "namespace": NAMESPACE},
            "path": f"/repo-{i}",
            "encryptionSecret": {"name": "enc", "namespace": NAMESPACE},
            "deletionPolicy": "Delete",
        },
    }


async def setup_namespace(endpoint: Endpoint) -> None:
    async with endpoint.session(1) as session:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await request(session, "POST", f"{endpoint.url}/api/v1/namespaces", 201, namespace)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "enc", "namespace": NAMESPACE},
            "stringData": {"RESTIC_PASSWORD": "bench-only-not-a-secret"},
        }
        await request(session, "POST", f"{endpoint.url}/api/v1/namespaces/{NAMESPACE}/secrets", 201, secret)


async def run_concurrently(count: int, job: Callable[[int], Any], concurrency: int = CONCURRENCY) -> None:
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            await job(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def create_all(endpoint: Endpoint, storages: int, repositories: int, backends: Path) -> None:
    """Storages first (Repositories' admission may look their storage up), then Repositories."""
    async with endpoint.session(CONCURRENCY) as session:
        url = endpoint.kind_url("backupstorages")
        await run_concurrently(storages, lambda i: request(session, "POST", url, 201, backup_storage(i, backends)))
        url_r = endpoint.kind_url("repositories")
        await run_concurrently(repositories, lambda i: request(session, "POST", url_r, 201, repository(i, storages)))


# ------------------------------------------------------------------ waiting
@dataclass
class ReadyProgress:
    storages_ready_s: float | None = None
    repositories_ready_s: float | None = None
    storages_ready: int = 0
    repositories_ready: int = 0
    polls: int = 0


async def count_ready(session: aiohttp.ClientSession, url: str) -> tuple[int, int]:
    items = json.loads(await request(session, "GET", url, 200))["items"]
    return len(items), sum((item.get("status") or {}).get("phase") == "Ready" for item in items)


async def wait_ready(endpoint: Endpoint, storages: int, repositories: int, started: float) -> ReadyProgress:
    """List both kinds every POLL_INTERVAL until all are Ready or READY_TIMEOUT has passed since ``started``."""
    progress = ReadyProgress()
    last_log = 0.0
    async with endpoint.session(2) as session:
        while True:
            poll_started = time.perf_counter()
            (_, s_ready), (_, r_ready) = await asyncio.gather(
                count_ready(session, endpoint.kind_url("backupstorages")),
                count_ready(session, endpoint.kind_url("repositories")),
            )
            now = time.perf_counter()
            progress.polls += 1
            progress.storages_ready, progress.repositories_ready = s_ready, r_ready
            if progress.storages_ready_s is None and s_ready >= storages:
                progress.storages_ready_s = now - started
                log(f"  all {storages} BackupStorages Ready at {progress.storages_ready_s:.1f}s")
            if progress.repositories_ready_s is None and r_ready >= repositories:
                progress.repositories_ready_s = now - started
                log(f"  all {repositories} Repositories Ready at {progress.repositories_ready_s:.1f}s")
            if progress.storages_ready_s is not None and progress.repositories_ready_s is not None:
                return progress
            if now - started >= READY_TIMEOUT:
                log(f"  gave up after {READY_TIMEOUT:.0f}s: {s_ready}/{storages} storages, {r_ready}/{repositories}")
                return progress
            if now - last_log >= 5:
                last_log = now
                log(f"  {now - started:5.1f}s: {s_ready}/{storages} storages, {r_ready}/{repositories} Ready")
            await asyncio.sleep(max(0.0, POLL_INTERVAL - (now - poll_started)))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def bench_controllers(
    server: Process, kubeconfig: Path, storages: int, repositories: int, backends: Path
) -> dict[str, Any]:
    endpoint = Endpoint.from_kubeconfig(kubeconfig)
    await setup_namespace(endpoint)
    log(f"creating {storages} BackupStorages and {repositories} Repositories ({CONCURRENCY} in flight)")
    started = time.perf_counter()
    await create_all(endpoint, storages, repositories, backends)
    create_s = time.perf_counter() - started
    log(f"  created in {create_s:.1f}s; waiting for Ready (poll every {POLL_INTERVAL}s, up to {READY_TIMEOUT:.0f}s)")
    progress = await wait_ready(endpoint, storages, repositories, started)
    all_ready = (
        max(progress.storages_ready_s, progress.repositories_ready_s)
        if progress.storages_ready_s is not None and progress.repositories_ready_s is not None
        else None
    )
    files = {
        "metadata_yaml": sum((storage_dir(backends, i) / "metadata.yaml").exists() for i in range(storages)),
        "repository_yaml": sum(
            (storage_dir(backends, i % storages) / f"repo-{i}" / "repository.yaml").exists()
            for i in range(repositories)
        ),
    }
    return {
        "create_s": _round(create_s),
        "storages_ready_s": _round(progress.storages_ready_s),
        "repositories_ready_s": _round(progress.repositories_ready_s),
        "all_ready_s": _round(all_ready),
        "ready_counts": {
            "storages": progress.storages_ready,
            "storages_total": storages,
            "repositories": progress.repositories_ready,
            "repositories_total": repositories,
        },
        "backend_files_written": files,
        "polls": progress.polls,
        "rss_mb": _round(proc_status_mb(server.pid, "VmHWM"), 1),
        "rss_mb_now": _round(proc_status_mb(server.pid, "VmRSS"), 1),
        "server_log": {
            "reconcile_failures": server.log_lines("failed; retrying"),
            "tracebacks": server.log_lines("Traceback"),
        },
    }


# ----------------------------------------------------------------- reference
def write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


MARKER = yaml.safe_dump(
    {
        "apiVersion": "config.kubestash.com/v1alpha1",
        "kind": "BackendMeta",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "operatorVersion": "bench",
    },
    sort_keys=False,
).encode()


async def bench_reference(kubeconfig: Path, storages: int, repositories: int, backends: Path) -> dict[str, Any]:
    endpoint = Endpoint.from_kubeconfig(kubeconfig)
    await setup_namespace(endpoint)
    log(f"reference: creating the same {storages + repositories} objects, then file + status patch per object")
    started = time.perf_counter()
    await create_all(endpoint, storages, repositories, backends)
    create_s = time.perf_counter() - started
    ready = {"status": {"phase": "Ready"}}
    merge = "application/merge-patch+json"
    async with endpoint.session(CONCURRENCY) as session:

        async def converge_storage(i: int) -> None:
            await asyncio.to_thread(write_synced, storage_dir(backends, i) / "metadata.yaml", MARKER)
            url = endpoint.kind_url("backupstorages", storage_name(i)) + "/status"
            await request(session, "PATCH", url, 200, ready, merge)

        async def converge_repository(i: int) -> None:
            path = storage_dir(backends, i % storages) / f"repo-{i}" / "repository.yaml"
            await asyncio.to_thread(write_synced, path, yaml.safe_dump(repository(i, storages)).encode())
            url = endpoint.kind_url("repositories", repository_name(i)) + "/status"
            await request(session, "PATCH", url, 200, ready, merge)

        converge_started = time.perf_counter()
        await run_concurrently(storages, converge_storage)
        storages_ready_s = time.perf_counter() - started
        await run_concurrently(repositories, converge_repository)
        all_ready_s = time.perf_counter() - started
        converge_s = time.perf_counter() - converge_started
    log(f"  reference: created in {create_s:.1f}s, all Ready at {all_ready_s:.1f}s")
    return {
        "description": REFERENCE_DESCRIPTION,
        "create_s": _round(create_s),
        "storages_ready_s": _round(storages_ready_s),
        "all_ready_s": _round(all_ready_s),
        "converge_s": _round(converge_s),
    }


# ----------------------------------------------------------------------- run
def run(storages: int, repositories: int) -> dict[str, Any]:
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="kubestash-bench-ctl-"))
    processes: list[Process] = []
    try:
        data_dir = root / "up"
        data_dir.mkdir()
        server = Process("kubestash up", kubestash_argv("up", data_dir), root / "up.log")
        processes.append(server)
        server.start()
        server.wait_for_file(data_dir / "kubeconfig")
        log(f"kubestash up pid {server.pid}")
        ours = asyncio.run(bench_controllers(server, data_dir / "kubeconfig", storages, repositories, root / "b"))
        if ours["server_log"]["tracebacks"]:
            log(f"server log has {ours['server_log']['tracebacks']} tracebacks; tail:\n{server.log_tail(2000)}")
        server.stop()

        ref_dir = root / "reference"
        ref_dir.mkdir()
        reference = Process("kubestash apiserver", kubestash_argv("apiserver", ref_dir), root / "reference.log")
        processes.append(reference)
        reference.start()
        reference.wait_for_file(ref_dir / "kubeconfig")
        ref = asyncio.run(bench_reference(ref_dir / "kubeconfig", storages, repositories, root / "ref-backends"))
        reference.stop()
    except BaseException:
        for process in processes:
            tail = process.log_tail()
            if tail:
                log(f"{process.name} log (tail):\n{tail}")
        raise
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(root, ignore_errors=True)

    all_ready = ours["all_ready_s"]
    return {
        "benchmark": "controllers",
        "objects": storages + repositories,
        "storages": storages,
        "repositories": repositories,
        "concurrency": CONCURRENCY,
        **ours,
        "target": TARGET,
        "meets_target": all_ready is not None and all_ready <= TARGET["all_ready_s"],
        "reference": ref,
        "ratio_vs_reference": {
            "all_ready_time": _round(all_ready / ref["all_ready_s"]) if all_ready is not None else None,
            "storages_ready_time": _round(ours["storages_ready_s"] / ref["storages_ready_s"])
            if ours["storages_ready_s"] is not None
            else None,
            "create_time": _round(ours["create_s"] / ref["create_s"]),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
        },
        "duration_s": _round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storages", type=int, default=500, help="BackupStorages to create (default 500)")
    parser.add_argument("--repositories", type=int, default=500, help="Repositories to create (default 500)")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args()
    if args.storages < 1 or args.repositories < 0:
        parser.error("--storages must be at least 1 and --repositories at least 0")
    run_and_print(lambda: run(args.storages, args.repositories), args.out)


if __name__ == "__main__":
    main()
