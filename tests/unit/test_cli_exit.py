"""The CLI's exit without finalization still does what a normal exit does: non-daemon threads finish, atexit
handlers run, buffered output arrives, and the status is ``sys.exit``'s."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import atexit, sys, threading, time
from kubestash.cli.main import leave
atexit.register(lambda: print("atexit ran", end=" "))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done", end=" "))).start()
sys.stdout.write("buffered")
sys.stdout.write(" ")
leave({code})
"""


@pytest.mark.parametrize(
    ("code", "status", "stderr"), [("None", 0, ""), ("3", 3, ""), ("'Error: no'", 1, "Error: no\n")]
)
def test_leave_finishes_like_a_normal_exit(code: str, status: int, stderr: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(code=code)], capture_output=True, text=True, check=False, timeout=30
    )
    assert (done.returncode, done.stdout, done.stderr) == (status, "buffered thread done atexit ran ", stderr)
