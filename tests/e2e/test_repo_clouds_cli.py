"""``kubestash repo`` on Google Cloud Storage and Azure Blob URLs, as restic spells them (``gs:bucket:/prefix``,
``azure:container:/prefix``), against the real emulators (gcp-storage-emulator, azurite). restic 0.14 cannot
reach either emulator (it has no endpoint setting for them), so the oracle here is the round trip: what the
native engine backs up comes back byte for byte, and ``check --read-data`` passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from restic_helpers import PASSWORD, describe, make_tree, restored_at
from storage_servers import AZURITE_ACCOUNT, AZURITE_KEY, azurite, gcs_emulator

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"


@pytest.fixture(params=["gcs", "azure"])
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    base = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
    if request.param == "gcs":
        with gcs_emulator("native-repos") as gcs:
            yield "gs:native-repos:/team/app", {**base, "STORAGE_EMULATOR_HOST": gcs.endpoint}
    else:
        with azurite() as server:
            server.create_container("native-repos")
            env = {
                "AZURE_ACCOUNT_NAME": AZURITE_ACCOUNT,
                "AZURE_ACCOUNT_KEY": AZURITE_KEY,
                "AZURE_ENDPOINT": server.endpoint,
            }
            yield "azure:native-repos:/team/app", {**base, **env}


def repo(url: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(KUBESTASH), "repo", "-r", url, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_backup_restore_check_on_a_cloud_url(cloud: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = cloud
    source = make_tree(tmp_path)
    (source / "big.bin").write_bytes(os.urandom(2 << 20))
    repo(url, env, "init")
    summary = json.loads(repo(url, env, "--json", "backup", str(source)))
    (snapshot,) = json.loads(repo(url, env, "--json", "snapshots"))
    assert snapshot["id"].startswith(summary["snapshot_id"]) and snapshot["paths"] == [str(source)]
    assert "no errors were found" in repo(url, env, "check", "--read-data")
    repo(url, env, "restore", "latest", "--target", str(tmp_path / "out"))
    assert describe(restored_at(tmp_path / "out", source)) == describe(source)
    failing = subprocess.run(
        [str(KUBESTASH), "repo", "-r", url, "snapshots"],
        env={**env, "RESTIC_PASSWORD": "not-the-password"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert failing.returncode == 1 and "wrong password" in failing.stderr and PASSWORD not in failing.stderr


SLOW_WAKEUP = """
import asyncio.selector_events, sys, threading, time
from kubestash.cli.main import main
write = asyncio.selector_events.BaseSelectorEventLoop._write_to_self
def slow(loop):
    write(loop)
    if threading.current_thread() is not threading.main_thread():
        time.sleep(0.1)
asyncio.selector_events.BaseSelectorEventLoop._write_to_self = slow
class SlowFinalization:
    def __del__(self):
        time.sleep(1)
held = SlowFinalization()
sys.argv = ["kubestash", *sys.argv[1:]]
main()
"""


def test_a_command_on_azure_exits_with_its_status_not_an_abort() -> None:
    """obstore's tokio threads hand each result to asyncio with ``call_soon_threadsafe``; one may still be in it
    when the command's last ``await`` returns, and Python ends a thread that wants the GIL back during
    finalization with ``pthread_exit`` -- fatal to a Rust thread: about one ``init`` in twenty exited with
    SIGABRT after creating the repository. Here the window is held open -- the wake-up write sleeps 0.1 s
    after sending, in the foreign thread, and finalization takes a second -- so without the CLI's
    finalization-free exit every run aborts."""
    with azurite() as server:
        server.create_container("exits")
        env = {
            **os.environ,
            "RESTIC_PASSWORD": PASSWORD,
            "AZURE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_ENDPOINT": server.endpoint,
        }
        done = subprocess.run(
            [sys.executable, "-c", SLOW_WAKEUP, "repo", "-r", "azure:exits:/app", "init"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert (done.returncode, done.stderr) == (0, "")
    assert "created restic repository" in done.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs:no-prefix-separator", "a gs repository is gs:<bucket>:/<prefix>"),
        ("azure:container:/x", "an azure repository needs AZURE_ACCOUNT_NAME"),
        ("b2:bucket:/x", "b2 repositories are not supported by the native engine; use --engine restic"),
    ],
)
def test_a_malformed_or_unsupported_url_is_one_line(url: str, message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    done = subprocess.run(
        [str(KUBESTASH), "repo", "-r", url, "snapshots"],
        env={**env, "RESTIC_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (1, f"Error: {message}")
