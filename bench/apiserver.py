"""Benchmark the bundled API server: creates, a 10,000-object list, watch latency under load, memory.

Run with the project's virtualenv::

    .venv/bin/python bench/apiserver.py [--objects 10000] [--out FILE]

The server runs as a subprocess (``kubestash apiserver``) in a temporary data directory, exactly as
users start it: HTTPS with its own CA and a bearer token, read back from the kubeconfig it writes.
The same create loop then runs against a trivial *reference* server (this file, ``--reference-server``,
also a subprocess): aiohttp over the same TLS certificate, the same bearer-token check, and one SQLite
insert + commit per request in WAL mode with ``synchronous=NORMAL`` (the store's settings). That is the
least any durable HTTP server must do per object, so ``ratio_vs_reference`` says how close we are to
the floor on this machine, and stays comparable between machines where absolute rates do not.

One JSON document goes to stdout (and to ``--out``); progress goes to stderr.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import Endpoint, Process, kubestash_argv, log, proc_status_mb, request, run_and_print

NAMESPACE = "bench"
CONCURRENCY = 32
LIST_RUNS = 5
WATCH_PROBES = 500
WATCH_WARMUP = 20
WATCH_PROBE_INTERVAL = 0.010
"""Seconds between the starts of two timed writes (each also waits for its own event)."""
BACKGROUND_WRITES_PER_S = 200.0
BACKGROUND_MAX_IN_FLIGHT = 16
RSS_SAMPLE_INTERVAL = 0.1
REQUEST_TIMEOUT = 60.0

TARGETS: dict[str, float] = {"creates_per_s": 500, "watch_p99_ms": 50, "list_10000_s": 1.0, "rss_mb": 300}

REFERENCE_DESCRIPTION = (
    "aiohttp server in a separate process over the same TLS certificate and bearer-token check; "
    "per POST it reads and json-parses the body, inserts it into one SQLite table (WAL, synchronous=NORMAL, "
    "the store's settings) with one commit per request, and echoes the body with 201. Its list concatenates "
    "the stored JSON rows into a ConfigMapList without parsing them. Same client, same create loop "
    "(same object count and concurrency), measured in the same run after our server has stopped."
)


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    return proc_status_mb(pid, field_name)


@dataclass
class RssSampler:
    pid: int
    peak: float = 0.0
    _task: asyncio.Task[None] | None = None

    def sample(self) -> float:
        value = rss_mb(self.pid)
        self.peak = max(self.peak, value)
        return value

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                self.sample()
            await asyncio.sleep(RSS_SAMPLE_INTERVAL)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


JSON = {"Content-Type": "application/json"}


def configmaps_url(endpoint: Endpoint, name: str = "") -> str:
    base = f"{endpoint.url}/api/v1/namespaces/{NAMESPACE}/configmaps"
    return f"{base}/{name}" if name else base


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "data": data,
    }


def object_name(i: int) -> str:
    return f"cm-{i:05d}"


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(statistics.median(ms), 2), "p99": round(cuts[98], 2), "max": round(ms[-1], 2)}


@dataclass
class CreateResult:
    per_s: float
    elapsed_s: float
    latencies: list[float] = field(default_factory=list)


async def create_many(endpoint: Endpoint, count: int, concurrency: int) -> CreateResult:
    """POST ``count`` small ConfigMaps with ``concurrency`` requests in flight; the rate over all of them."""
    names = iter(range(count))
    latencies: list[float] = []
    url = configmaps_url(endpoint)
    async with endpoint.session(concurrency) as session:

        async def worker() -> None:
            for i in names:
                body = configmap(object_name(i), {"index": str(i), "value": f"value-{i}-{'x' * 32}"})
                started = time.perf_counter()
                await request(session, "POST", url, 201, body)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return CreateResult(count / elapsed, elapsed, latencies)


@dataclass
class ListResult:
    runs: list[float]
    size_bytes: int
    resource_version: str

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


async def list_many(endpoint: Endpoint, expected: int, runs: int) -> ListResult:
    """GET the namespace's ConfigMaps as plain JSON, read and parse it all; ``runs`` times."""
    times: list[float] = []
    size = 0
    rv = ""
    async with endpoint.session(1) as session:
        for _ in range(runs):
            started = time.perf_counter()
            raw = await request(session, "GET", configmaps_url(endpoint), 200)
            parsed = json.loads(raw)
            times.append(time.perf_counter() - started)
            if len(parsed["items"]) != expected:
                raise RuntimeError(f"list returned {len(parsed['items'])} items, expected {expected}")
            size, rv = len(raw), str(parsed["metadata"].get("resourceVersion", ""))
    return ListResult(times, size, rv)


# --------------------------------------------------------------------- watch
@dataclass
class WatchResult:
    latencies: list[float]
    events_received: int
    background_writes: int
    background_seconds: float


async def watch_latency(endpoint: Endpoint, objects: int) -> WatchResult:
    """Time from just before a write is sent to the arrival of its watch event, under background writes."""
    probe = "probe"
    loop = asyncio.get_running_loop()
    pending: dict[int, asyncio.Future[float]] = {}
    received = 0
    async with endpoint.session(BACKGROUND_MAX_IN_FLIGHT + 8) as session:
        created = json.loads(await request(session, "POST", configmaps_url(endpoint), 201, configmap(probe, {})))
        since = created["metadata"]["resourceVersion"]
        watch = await session.get(
            configmaps_url(endpoint),
            params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "600"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        if watch.status != 200:
            raise RuntimeError(f"watch: {watch.status} {(await watch.read())[:500]!r}")

        async def read_events() -> None:
            nonlocal received
            async for line in watch.content:
                arrived = time.perf_counter()
                if not line.strip():
                    continue
                event = json.loads(line)
                received += 1
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch error: {obj}")
                if obj["metadata"]["name"] == probe and "seq" in (obj.get("data") or {}):
                    future = pending.pop(int(obj["data"]["seq"]), None)
                    if future is not None and not future.done():
                        future.set_result(arrived)

        background_writes = 0
        stop_background = asyncio.Event()

        async def background() -> None:
            nonlocal background_writes
            limit = asyncio.Semaphore(BACKGROUND_MAX_IN_FLIGHT)
            tasks: set[asyncio.Task[None]] = set()

            async def one(k: int) -> None:
                nonlocal background_writes
                try:
                    i = random.randrange(objects)
                    body = configmap(object_name(i), {"index": str(i), "background": str(k)})
                    await request(session, "PUT", configmaps_url(endpoint, object_name(i)), 200, body)
                    background_writes += 1
                finally:
                    limit.release()

            started = loop.time()
            k = 0
            while not stop_background.is_set():
                await asyncio.sleep(max(0.0, started + k / BACKGROUND_WRITES_PER_S - loop.time()))
                await limit.acquire()
                task = asyncio.create_task(one(k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
            await asyncio.gather(*tasks)

        reader = asyncio.create_task(read_events())
        load = asyncio.create_task(background())
        latencies: list[float] = []
        load_started = time.perf_counter()
        try:
            await asyncio.sleep(0.5)  # let the background load reach its rate
            next_start = loop.time()
            for seq in range(WATCH_WARMUP + WATCH_PROBES):
                await asyncio.sleep(max(0.0, next_start - loop.time()))
                next_start = loop.time() + WATCH_PROBE_INTERVAL
                future: asyncio.Future[float] = loop.create_future()
                pending[seq] = future
                body = configmap(probe, {"seq": str(seq), "ts": str(time.time_ns())})
                sent = time.perf_counter()
                write = asyncio.create_task(request(session, "PUT", configmaps_url(endpoint, probe), 200, body))
                arrived = await asyncio.wait_for(asyncio.shield(future), REQUEST_TIMEOUT)
                await write
                if seq >= WATCH_WARMUP:
                    latencies.append(arrived - sent)
                if reader.done():
                    reader.result()
                    raise RuntimeError("watch ended early")
        finally:
            stop_background.set()
            await load
            background_seconds = time.perf_counter() - load_started
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            watch.close()
    return WatchResult(latencies, received, background_writes, background_seconds)


# ----------------------------------------------------------------- reference
def reference_server(data_dir: Path, pki: Path, token: str) -> None:
    """The floor: TLS, a token check, parse the body, one SQLite insert and commit per object."""
    db = sqlite3.connect(str(data_dir / "reference.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS objects (namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, "
        "PRIMARY KEY (namespace, name))"
    )
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        if not secrets.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return web.Response(status=401)
        return await handler(request)

    async def create(request: web.Request) -> web.Response:
        raw = await request.read()
        obj = json.loads(raw)
        text = json.dumps(obj, separators=(",", ":"))
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO objects (namespace, name, data) VALUES (?, ?, ?)",
                (request.match_info["ns"], obj["metadata"]["name"], text),
            )
            db.execute("COMMIT")
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK")
            return web.Response(status=409)
        return web.Response(body=text.encode(), status=201, content_type="application/json")

    async def list_objects(request: web.Request) -> web.Response:
        rows = db.execute(
            "SELECT data FROM objects WHERE namespace=? ORDER BY name", (request.match_info["ns"],)
        ).fetchall()
        body = '{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[' + ",".join(r[0] for r in rows) + "]}"
        return web.Response(body=body.encode(), content_type="application/json")

    async def main() -> None:
        app = web.Application(middlewares=[auth], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v1/namespaces/{ns}/configmaps", create)
        app.router.add_get("/api/v1/namespaces/{ns}/configmaps", list_objects)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki / "server.crt", pki / "server.key")
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock, ssl_context=context).start()
        partial = data_dir / "port.tmp"
        partial.write_text(str(port))
        partial.rename(data_dir / "port")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            db.close()

    asyncio.run(main())


# ----------------------------------------------------------------------- run
def _round(value: float, digits: int = 3) -> float:
    return round(value, digits)


async def bench_ours(server: Process, kubeconfig: Path, objects: int) -> dict[str, Any]:
    endpoint = Endpoint.from_kubeconfig(kubeconfig)
    sampler = RssSampler(server.pid)
    sampler.start()
    rss: dict[str, float] = {"start": _round(sampler.sample(), 1)}
    try:
        async with endpoint.session(1) as session:
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            await request(session, "POST", f"{endpoint.url}/api/v1/namespaces", 201, namespace)

        log(f"creating {objects} ConfigMaps ({CONCURRENCY} in flight)")
        creates = await create_many(endpoint, objects, CONCURRENCY)
        rss["after_creates"] = _round(sampler.sample(), 1)
        log(f"  {creates.per_s:.0f}/s over {creates.elapsed_s:.1f}s")

        log(f"listing {objects} ConfigMaps, {LIST_RUNS} times")
        listing = await list_many(endpoint, objects, LIST_RUNS)
        rss["after_list"] = _round(sampler.sample(), 1)
        log(f"  median {listing.median:.3f}s ({listing.size_bytes / 1e6:.1f} MB)")

        log(f"watch latency: {WATCH_PROBES} timed writes under {BACKGROUND_WRITES_PER_S:.0f} writes/s")
        watch = await watch_latency(endpoint, objects)
        rss["end"] = _round(sampler.sample(), 1)
        watch_ms = percentiles_ms(watch.latencies)
        log(f"  p50 {watch_ms['p50']}ms p99 {watch_ms['p99']}ms")
    finally:
        await sampler.stop()
    hwm = rss_mb(server.pid, "VmHWM")
    return {
        "creates_per_s": _round(creates.per_s, 1),
        "creates_elapsed_s": _round(creates.elapsed_s, 2),
        "create_latency_ms": percentiles_ms(creates.latencies),
        f"list_{objects}_s": _round(listing.median, 4),
        "list_runs_s": [_round(t, 4) for t in listing.runs],
        "list_bytes": listing.size_bytes,
        "watch_latency_ms": {**watch_ms, "samples": len(watch.latencies)},
        "watch_background": {
            "target_writes_per_s": BACKGROUND_WRITES_PER_S,
            "achieved_writes_per_s": _round(watch.background_writes / watch.background_seconds, 1),
            "watch_events_received": watch.events_received,
        },
        "rss_mb": rss,
        "rss_mb_peak": _round(max(sampler.peak, hwm), 1),
        "rss_mb_peak_sampled": _round(sampler.peak, 1),
        "rss_mb_hwm": _round(hwm, 1),
    }


async def bench_reference(port_file: Path, pki: Path, token: str, objects: int) -> dict[str, Any]:
    ca = (pki / "ca.crt").read_text()
    endpoint = Endpoint(f"https://127.0.0.1:{port_file.read_text()}", token, ssl.create_default_context(cadata=ca))
    log(f"reference: creating {objects} objects ({CONCURRENCY} in flight)")
    creates = await create_many(endpoint, objects, CONCURRENCY)
    log(f"  {creates.per_s:.0f}/s over {creates.elapsed_s:.1f}s")
    listing = await list_many(endpoint, objects, LIST_RUNS)
    log(f"  list median {listing.median:.3f}s")
    return {
        "description": REFERENCE_DESCRIPTION,
        "creates_per_s": _round(creates.per_s, 1),
        "create_latency_ms": percentiles_ms(creates.latencies),
        f"list_{objects}_s": _round(listing.median, 4),
    }


def run(objects: int) -> dict[str, Any]:
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="kubestash-bench-"))
    processes: list[Process] = []
    try:
        data_dir = root / "server"
        data_dir.mkdir()
        server = Process("kubestash apiserver", kubestash_argv("apiserver", data_dir), root / "server.log")
        processes.append(server)
        server.start()
        server.wait_for_file(data_dir / "kubeconfig")
        log(f"server pid {server.pid} up")
        ours = asyncio.run(bench_ours(server, data_dir / "kubeconfig", objects))
        server.stop()

        ref_dir = root / "reference"
        ref_dir.mkdir()
        token = Endpoint.from_kubeconfig(data_dir / "kubeconfig").token
        argv = [sys.executable, str(Path(__file__).resolve()), "--reference-server", str(ref_dir)]
        reference = Process("reference server", [*argv, "--pki", str(data_dir / "pki")], root / "reference.log")
        processes.append(reference)
        # The token travels in the environment, not on the command line.
        os.environ["BENCH_REFERENCE_TOKEN"] = token
        reference.start()
        reference.wait_for_file(ref_dir / "port")
        ref = asyncio.run(bench_reference(ref_dir / "port", data_dir / "pki", token, objects))
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
        os.environ.pop("BENCH_REFERENCE_TOKEN", None)
        shutil.rmtree(root, ignore_errors=True)

    list_key = f"list_{objects}_s"
    ours_list: float = ours[list_key]
    meets: dict[str, bool | None] = {
        "creates_per_s": ours["creates_per_s"] >= TARGETS["creates_per_s"],
        "watch_p99_ms": ours["watch_latency_ms"]["p99"] <= TARGETS["watch_p99_ms"],
        "list_10000_s": ours_list <= TARGETS["list_10000_s"] if objects >= 10_000 else None,
        "rss_mb": ours["rss_mb_peak"] <= TARGETS["rss_mb"],
    }
    return {
        "benchmark": "apiserver",
        "objects": objects,
        "concurrency": CONCURRENCY,
        **ours,
        "targets": TARGETS,
        "meets_targets": meets,
        "reference": ref,
        "ratio_vs_reference": {
            "creates_per_s": _round(ours["creates_per_s"] / ref["creates_per_s"], 3),
            "list_time": _round(ours_list / ref[list_key], 2),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
            "sqlite": sqlite3.sqlite_version,
        },
        "duration_s": _round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000, help="ConfigMaps to create and list (default 10000)")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--reference-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_server is not None:
        reference_server(args.reference_server, args.pki, os.environ["BENCH_REFERENCE_TOKEN"])
        return
    if args.objects < 100:
        parser.error("--objects must be at least 100")
    run_and_print(lambda: run(args.objects), args.out)


if __name__ == "__main__":
    main()
