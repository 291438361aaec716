"""Real object-storage servers for the backend tests: moto (S3), azurite (Azure Blob), gcp-storage-emulator (GCS).

Each is a context manager that starts the server on a free loopback port, waits until the port accepts
connections, yields where to reach it, and stops the process it started (by PID, never by name). A server
that cannot start raises -- tests that use it fail rather than skip, so a broken install is visible.

Buckets and containers are created without any provider SDK: moto accepts an unsigned ``PUT /<bucket>``
while auth is not enforced, azurite gets a Shared-Key-signed ``PUT ?restype=container`` (signed here with
the emulator's published development key), and the GCS emulator creates its bucket from ``--default-bucket``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development key (published in its documentation; not a secret)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (for 'unreachable' tests)."""
    return free_port()


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} in {timeout}s: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextmanager
def _serve(
    argv: list[str], port: int, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so children die with it
        )
    try:
        _wait_for_port(proc, port, log)
        yield proc
    finally:
        _stop(proc)


def _http(method: str, url: str, headers: Mapping[str, str] | None = None) -> int:
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


# ------------------------------------------------------------------ S3 (moto)


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    def stop(self) -> None:
        """Stop the server now (the S3 endpoint goes away), before the context ends."""
        if self.process is not None:
            _stop(self.process)

    def create_bucket(self, bucket: str) -> None:
        # moto does not check signatures unless auth is enforced; it only reads the service ("s3") from the
        # credential scope of the Authorization header to route the request.
        auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
        status = _http("PUT", f"{self.endpoint}/{bucket}", {"Authorization": auth})
        if status != 200:
            raise RuntimeError(f"moto: creating bucket {bucket} answered {status}")


@contextmanager
def moto_server(*, enforce_auth: bool = False) -> Iterator[MotoServer]:
    """moto_server on a free port. With ``enforce_auth`` every request is authenticated against moto's IAM
    (``INITIAL_NO_AUTH_ACTION_COUNT=0``); no IAM user exists, so every access key is unknown to it."""
    port = free_port()
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if enforce_auth else {"INITIAL_NO_AUTH_ACTION_COUNT": "inf"}
    with tempfile.TemporaryDirectory(prefix="moto-") as d:
        argv = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        with _serve(argv, port, Path(d), env) as proc:
            yield MotoServer(endpoint=f"http://127.0.0.1:{port}", process=proc)


# ------------------------------------------------------------------ Azure (azurite)


@dataclass(frozen=True)
class Azurite:
    endpoint: str
    """Blob endpoint including the account, e.g. http://127.0.0.1:PORT/devstoreaccount1."""
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    def create_container(self, container: str) -> None:
        """Create a container with a Shared-Key-signed REST call (no SDK needed)."""
        date = formatdate(usegmt=True)
        version = "2021-12-02"
        canonical_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
        # Path-style emulator URLs carry the account in the path too, so it appears twice here.
        canonical_resource = f"/{self.account}/{self.account}/{container}\nrestype:container"
        # VERB, then 11 standard headers (all empty here, Content-Length "" for 0), then ours.
        string_to_sign = "PUT\n" + "\n" * 11 + canonical_headers + canonical_resource
        signature = base64.b64encode(
            hmac.new(base64.b64decode(self.key), string_to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        headers = {
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {self.account}:{signature}",
            "Content-Length": "0",
        }
        status = _http("PUT", f"{self.endpoint}/{container}?restype=container", headers)
        if status not in (201, 409):
            raise RuntimeError(f"azurite: creating container {container} answered {status}")


def azurite_binary() -> Path:
    path = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `npm ci` at the repository root (scripts/test.sh does)")
    return path


@contextmanager
def azurite() -> Iterator[Azurite]:
    port = free_port()
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed; azurite needs it")
    with tempfile.TemporaryDirectory(prefix="azurite-") as d:
        argv = [
            str(azurite_binary()),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "-l",
            d,
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ]
        with _serve(argv, port, Path(d)):
            yield Azurite(endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


# ------------------------------------------------------------------ GCS (gcp-storage-emulator)


@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str
    bucket: str

    def create_bucket(self, bucket: str) -> None:
        """Create a bucket through the JSON API (the emulator does not check credentials)."""
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=kubestash-test",
            method="POST",
            data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"gcs emulator: creating bucket {bucket} answered {resp.status}")


@contextmanager
def gcs_emulator(bucket: str = "kubestash") -> Iterator[GcsEmulator]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gcs-") as d:
        argv = [
            str(VENV_BIN / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            bucket,
        ]
        with _serve(argv, port, Path(d)):
            yield GcsEmulator(endpoint=f"http://127.0.0.1:{port}", bucket=bucket)
