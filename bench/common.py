"""Pieces both benchmarks share: the server subprocess, its kubeconfig, /proc memory, requests."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

STARTUP_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
NAMESPACE = "bench"
GROUP_VERSION = "storage.kubestash.com/v1alpha1"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- processes
@dataclass
class Process:
    """A server subprocess whose log goes to a file; stopped by its own pid only."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_for_file(self, path: Path, timeout: float = STARTUP_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if path.exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_lines(self, needle: str) -> int:
        try:
            return sum(needle in line for line in self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kubestash_argv(command: str, data_dir: Path) -> list[str]:
    candidate = Path(sys.executable).parent / "kubestash"
    binary = str(candidate) if candidate.exists() else shutil.which("kubestash")
    if binary is None:
        raise SystemExit("kubestash is not installed: run with the project's virtualenv (.venv/bin/python)")
    return [binary, command, "--data-dir", str(data_dir), "--port", "0"]


def proc_status_mb(pid: int, field_name: str) -> float:
    """A field of /proc/<pid>/status in MiB (VmRSS now, VmHWM the kernel's peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for pid {pid}")


# -------------------------------------------------------------------- client
@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str
    ssl: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Endpoint:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(cluster["server"], config["users"][0]["user"]["token"], ssl.create_default_context(cadata=ca_pem))

    def session(self, connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=self.ssl),
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": "kubestash-bench/1.0"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=REQUEST_TIMEOUT),
        )

    def kind_url(self, plural: str, name: str = "") -> str:
        base = f"{self.url}/apis/{GROUP_VERSION}/namespaces/{NAMESPACE}/{plural}"
        return f"{base}/{name}" if name else base


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    expect: int,
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> bytes:
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if body is not None else None
    async with session.request(method, url, data=payload, headers=headers) as resp:
        raw = await resp.read()
        if resp.status != expect:
            raise RuntimeError(f"{method} {url}: expected {expect}, got {resp.status}: {raw[:500]!r}")
        return raw


# ------------------------------------------------------------------ objects


def run_and_print(run: Callable[[], dict[str, Any]], out: Path | None) -> None:
    """Run a benchmark and print its JSON document (also to ``out``). SIGTERM unwinds like Ctrl-C, so the
    servers a benchmark started are stopped and its temporary files removed."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run()
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temporary files removed")
        sys.exit(130)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
