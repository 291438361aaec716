"""The :class:`~kubestash.engine.base.Engine` backed by the ``restic`` binary (0.14+), run as asyncio subprocesses.

Decisions worth knowing:

* **Environment** -- the child gets ``os.environ`` minus every inherited ``RESTIC_*``/``AWS_*``/``GOOGLE_*``/
  ``AZURE_*`` variable, plus the target's own env and ``RESTIC_PASSWORD``; nothing else leaks between
  repositories. The cache is ``--cache-dir`` or ``--no-cache``, never the user's default.
* **Stopping** -- every restic runs in its own process group. A timeout or a cancelled task sends SIGINT
  (restic 0.14 removes its lock only on SIGINT; SIGTERM kills it outright), then SIGKILL after a grace
  period. Other processes (``backup_stdin``'s command) get SIGTERM first. Timeouts raise
  ``EngineError("Timeout")``; cancellation re-raises ``CancelledError`` once the processes are gone.
* **Incomplete backups** -- restic exit code 3 ("some source files could not be read") still saves a
  snapshot, but a backup that silently skipped files is not a success: it raises ``EngineError("Failed")``
  naming the count, the first unreadable item and the saved snapshot's ID.
* **backup_stdin** -- the command's output is pumped through this process, so restic's stdin is closed
  (and the snapshot saved) only after the command exited 0; a failing command stops restic and no
  snapshot of a truncated dump is created.
* **init** -- serialized per URL inside one engine, and for local repositories across processes with an
  ``flock`` on the repository directory; an ``init`` losing a race still sees "config file already exists"
  and reports False.
* **restore** -- restic 0.14 reports no restore progress, so the snapshot is listed (``ls --json``: its paths
  and the totals to measure against) alongside the restore -- before it only when patterns must be made
  relative to the snapshot's path -- and the target directory is measured while restic writes.
  :class:`RestoreSummary` has the listing's totals, or with patterns what the target holds afterwards.
* Messages are the last meaningful stderr line, with every secret of the target replaced by ``***``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shlex
import signal
import stat
import tempfile
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubestash.engine.base import (
    BackupSummary,
    CheckResult,
    EngineError,
    EngineErrorReason,
    KeyInfo,
    Progress,
    ProgressCallback,
    RepositoryTarget,
    RestoreSummary,
    SnapshotInfo,
)
from kubestash.engine.support import hidden, local_repo_lock, report, rooted, scrub

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCRUBBED_ENV_PREFIXES = ("RESTIC_", "AWS_", "GOOGLE_", "AZURE_")
EXIT_INCOMPLETE = 3
LINE_LIMIT = 64 * 1024 * 1024
PUMP_CHUNK = 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# (reason, lower-case stderr fragments), first match wins.
_CLASSES: tuple[tuple[EngineErrorReason, tuple[str, ...]], ...] = (
    ("WrongPassword", ("wrong password or no key found",)),
    (
        "InvalidCredentials",
        (
            "invalidaccesskeyid",
            "access key id you provided does not exist",
            "signaturedoesnotmatch",
            "signature we calculated does not match",
            "access denied",
            "accessdenied",
            "403 forbidden",
            "status code: 403",
            "authenticationfailed",
            "invalid_grant",
        ),
    ),
    (
        "Unreachable",
        (
            "connection refused",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "connection reset by peer",
            "tls handshake timeout",
            "context deadline exceeded",
        ),
    ),
    ("Locked", ("repository is already locked", "unable to create lock")),
    (
        "RepositoryNotFound",
        (
            "is there a repository at the following location?",
            "unable to open config file",
            "specified bucket does not exist",
        ),
    ),
    ("SnapshotNotFound", ("no matching id found", "no snapshot found", "invalid id")),
    ("PathNotFound", ("does not exist, skipping", "all target directories/files do not exist")),
)


@dataclass
class _Stderr:
    """The tail of a process's stderr plus restic's JSON error reports (``message_type: error``)."""

    lines: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def add(self, line: str) -> None:
        line = _ANSI.sub("", line).rstrip()
        if not line:
            return
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("message_type") == "error":
                self.error_count += 1
                if len(self.errors) < 5:
                    error = doc.get("error")
                    detail = _error_detail(error)
                    item = str(doc.get("item") or "")
                    self.errors.append(f"{item}: {detail}" if detail else item)
                return
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class _Outcome:
    returncode: int
    stdout: str
    stderr: _Stderr


class ResticEngine:
    """Runs ``restic`` for every :class:`~kubestash.engine.base.Engine` operation."""

    def __init__(
        self, binary: str = "restic", *, kill_grace: float = 3.0, progress_fps: float = 2.0, restore_poll: float = 2.0
    ) -> None:
        self.binary = binary
        self.kill_grace = kill_grace
        self.progress_fps = progress_fps
        self.restore_poll = restore_poll
        # asyncio locks belong to one event loop; a weak map lets the engine outlive loops (tests, CLI runs).
        self._init_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------ operations

    async def init(self, repo: RepositoryTarget) -> bool:
        locks = self._init_locks.setdefault(asyncio.get_running_loop(), {})
        lock = locks.setdefault(repo.url, asyncio.Lock())
        async with lock, local_repo_lock(repo.url):
            if await self._exists(repo):
                return False
            outcome = await self._run(repo, ["init", "--repository-version", "2"])
            if outcome.returncode == 0:
                return True
            if "config file already exists" in outcome.stderr.text:
                return False
            raise self._error(repo, outcome, "init")

    async def backup(
        self,
        repo: RepositoryTarget,
        paths: Sequence[Path],
        *,
        excludes: Sequence[str] = (),
        host: str = "host-0",
        tags: Sequence[str] = (),
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> BackupSummary:
        if not paths:
            raise EngineError("PathNotFound", "no paths to back up")
        for path in paths:
            if not os.path.lexists(path):
                raise EngineError("PathNotFound", scrub(f"path {path} does not exist", hidden(repo)))
        args = ["backup", "--json", "--host", host]
        for pattern in excludes:
            args += ["--exclude", pattern]
        for tag in tags:
            args += ["--tag", tag]
        args += ["--", *(str(p) for p in paths)]
        return await self._backup(repo, args, on_progress, timeout)

    async def backup_stdin(
        self,
        repo: RepositoryTarget,
        command: Sequence[str],
        filename: str,
        *,
        host: str = "host-0",
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> BackupSummary:
        if not command:
            raise EngineError("Failed", "no command to back up the output of")
        args = ["backup", "--json", "--host", host, "--stdin", "--stdin-filename", filename]
        return await self._backup(repo, args, on_progress, timeout, command=command)

    async def restore(
        self,
        repo: RepositoryTarget,
        snapshot_id: str,
        target: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        relative: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> RestoreSummary:
        loop = asyncio.get_running_loop()
        started = loop.time()
        report(on_progress, Progress())

        async def work(procs: list[_Proc]) -> RestoreSummary:
            listing = _Listing()
            listed = loop.create_task(self._exec(repo, ["ls", "--json", snapshot_id], procs, on_line=listing.take))
            filtered = bool(include or exclude)
            if relative and filtered:
                await asyncio.wait({listed})  # the patterns are relative to the snapshot's path: learn it first
            root = listing.paths[0] if listed.done() and relative and len(listing.paths) == 1 else None
            args = ["restore", snapshot_id, "--target", str(target)]
            for flag, patterns in (("--include", include), ("--exclude", exclude)):
                for pattern in patterns:
                    args += [flag, rooted(pattern, root)]
            running = loop.create_task(self._exec(repo, args, procs))
            try:
                while not running.done():
                    await asyncio.wait({running}, timeout=self.restore_poll)
                    if on_progress is not None and listed.done() and not running.done():
                        files, size = await asyncio.to_thread(_measure, target)
                        report(on_progress, listing.progress(files, size, loop.time() - started))
                outcome = running.result()
                if outcome.returncode != 0:
                    raise self._error(repo, outcome, "restore")
                listing_outcome = await listed
            finally:
                listed.cancel()
            if listing_outcome.returncode != 0:
                raise self._error(repo, listing_outcome, "ls")
            files, size = await asyncio.to_thread(_measure, target) if filtered else (listing.files, listing.bytes)
            return RestoreSummary(
                files_restored=files,
                bytes_restored=size,
                total_duration=loop.time() - started,
                paths=tuple(listing.paths),
            )

        summary = await self._guarded(work, timeout, "restore")
        report(
            on_progress,
            Progress(
                seconds_elapsed=summary.total_duration,
                seconds_remaining=0.0,
                percent_done=1.0,
                total_files=summary.files_restored,
                files_done=summary.files_restored,
                total_bytes=summary.bytes_restored,
                bytes_done=summary.bytes_restored,
            ),
        )
        return summary

    async def snapshots(self, repo: RepositoryTarget) -> list[SnapshotInfo]:
        docs = await self._json(repo, ["snapshots", "--json"], "snapshots")
        result = []
        for doc in docs if isinstance(docs, list) else []:
            if not isinstance(doc, dict):
                continue
            result.append(
                SnapshotInfo(
                    id=str(doc.get("id", "")),
                    time=_parse_time(str(doc.get("time", ""))) or datetime.fromtimestamp(0, UTC),
                    paths=tuple(str(p) for p in doc.get("paths") or ()),
                    hostname=str(doc.get("hostname", "")),
                    tags=tuple(str(t) for t in doc.get("tags") or ()),
                    parent=str(doc["parent"]) if doc.get("parent") else None,
                )
            )
        return sorted(result, key=lambda s: s.time)

    async def stats(self, repo: RepositoryTarget, snapshot_id: str | None = None) -> int:
        args = ["stats", "--mode", "raw-data", "--json"]
        if snapshot_id:
            args.append(snapshot_id)
        doc = await self._json(repo, args, "stats")
        return int(doc.get("total_size") or 0) if isinstance(doc, dict) else 0

    async def check(
        self, repo: RepositoryTarget, *, read_data: bool = False, snapshots: Sequence[str] | None = None
    ) -> CheckResult:
        outcome = await self._run(repo, ["check", *(["--read-data"] if read_data else [])])
        lines = [_ANSI.sub("", line).strip() for line in [*outcome.stdout.splitlines(), *outcome.stderr.lines]]
        if outcome.returncode == 0:
            extra = next((line for line in lines if "additional files were found" in line), None)
            message = "no errors were found" + (f"; {extra.rstrip('.')} (prune removes them)" if extra else "")
            return CheckResult(ok=True, message=message)
        error = self._error(repo, outcome, "check")
        if error.reason not in ("Failed", "PathNotFound", "SnapshotNotFound"):
            raise error
        problems = [line for line in lines if _is_check_problem(line)]
        message = "; ".join(problems[:3]) if problems else error.message
        if len(problems) > 3:
            message += f" (and {len(problems) - 3} more)"
        return CheckResult(ok=False, message=scrub(message, hidden(repo)))

    async def forget(self, repo: RepositoryTarget, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        if not snapshot_ids:
            return
        args = ["forget", *(["--prune"] if prune else []), "--", *snapshot_ids]
        outcome = await self._run(repo, args)
        if outcome.returncode != 0 and self._error(repo, outcome, "forget").reason == "Locked":
            await self.unlock(repo)  # removes stale locks only; a live one still blocks the retry
            outcome = await self._run(repo, args)
        if outcome.returncode != 0:
            raise self._error(repo, outcome, "forget")

    async def unlock(self, repo: RepositoryTarget, *, remove_all: bool = False) -> None:
        outcome = await self._run(repo, ["unlock", *(["--remove-all"] if remove_all else [])])
        if outcome.returncode != 0:
            raise self._error(repo, outcome, "unlock")

    async def keys(self, repo: RepositoryTarget) -> list[KeyInfo]:
        # restic prints `created` in the process's local zone without an offset: make that UTC.
        docs = await self._json(repo, ["key", "list", "--json"], "key list", extra_env={"TZ": "UTC"})
        result = []
        for doc in docs if isinstance(docs, list) else []:
            if isinstance(doc, dict):
                created = _parse_time(str(doc.get("created", "")).replace(" ", "T"))
                result.append(
                    KeyInfo(
                        id=str(doc.get("id", "")),
                        current=bool(doc.get("current")),
                        user=str(doc.get("userName", "")),
                        host=str(doc.get("hostName", "")),
                        created=created.replace(tzinfo=UTC) if created and created.tzinfo is None else created,
                    )
                )
        return result

    async def add_key(self, repo: RepositoryTarget, new_password: str, *, user: str = "", host: str = "") -> None:
        extra = ["--user", user] if user else []
        extra += ["--host", host] if host else []
        await self._with_new_password(repo, new_password, ["key", "add"], extra, "key add")

    async def update_key(self, repo: RepositoryTarget, new_password: str) -> None:
        await self._with_new_password(repo, new_password, ["key", "passwd"], [], "key passwd")

    async def _with_new_password(
        self, repo: RepositoryTarget, new_password: str, command: list[str], extra: list[str], what: str
    ) -> None:
        """Run ``restic <command> --new-password-file F <extra>``, F a private temporary file removed afterwards."""
        if not new_password or new_password != new_password.strip():
            raise EngineError("Failed", "the new password must be non-empty without surrounding whitespace")
        secrets = (*hidden(repo), new_password)
        fd, name = tempfile.mkstemp(prefix="restic-key-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new_password)
            outcome = await self._run(repo, [*command, "--new-password-file", name, *extra])
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if outcome.returncode != 0:
            raise self._error(repo, outcome, what, secrets)

    async def remove_key(self, repo: RepositoryTarget, key_id: str) -> None:
        outcome = await self._run(repo, ["key", "remove", key_id])
        if outcome.returncode != 0:
            raise self._error(repo, outcome, "key remove")

    # ------------------------------------------------------------ backup

    async def _backup(
        self,
        repo: RepositoryTarget,
        args: list[str],
        on_progress: ProgressCallback | None,
        timeout: float | None,
        *,
        command: Sequence[str] | None = None,
    ) -> BackupSummary:
        summary: dict[str, Any] = {}

        def on_line(line: str) -> None:
            doc = _json_object(line)
            if doc is None:
                return
            kind = doc.get("message_type")
            if kind == "status" and on_progress is not None:
                report(on_progress, _progress(doc))
            elif kind == "summary":
                summary.update(doc)

        env = {"RESTIC_PROGRESS_FPS": f"{self.progress_fps:g}"}

        async def work(procs: list[_Proc]) -> _Outcome:
            if command is None:
                return await self._exec(repo, args, procs, on_line=on_line, extra_env=env)
            return await self._exec_piped(repo, args, procs, command, on_line=on_line, extra_env=env)

        started = datetime.now(UTC)
        outcome = await self._guarded(work, timeout, "backup")
        ended = datetime.now(UTC)
        if outcome.returncode == EXIT_INCOMPLETE:
            errors = outcome.stderr
            first = f" (first: {errors.errors[0]})" if errors.errors else ""
            snapshot = f"; snapshot {summary['snapshot_id']} was saved without them" if summary else ""
            message = f"backup incomplete: {max(errors.error_count, 1)} file(s) could not be read{first}{snapshot}"
            raise EngineError("Failed", scrub(message, hidden(repo)))
        if outcome.returncode != 0:
            raise self._error(repo, outcome, "backup")
        if not summary.get("snapshot_id"):
            raise EngineError("Failed", "restic backup finished without reporting a snapshot")
        result = _backup_summary(summary, started, ended)
        files, size = result.total_files_processed, result.total_bytes_processed
        done = Progress(result.total_duration, 0.0, 1.0, files, files, size, size)
        report(on_progress, done)  # restic's last status line may predate the end: close at 100 %
        return result

    async def _exec_piped(
        self,
        repo: RepositoryTarget,
        args: list[str],
        procs: list[_Proc],
        command: Sequence[str],
        *,
        on_line: Callable[[str], None],
        extra_env: Mapping[str, str],
    ) -> _Outcome:
        """restic reading ``command``'s stdout; restic's stdin closes only after the command exited 0."""
        logger.debug("running %s, piped into restic", scrub(shlex.join(command), hidden(repo)))
        try:
            cmd_proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        except OSError as e:
            raise EngineError("Failed", scrub(f"cannot run {command[0]}: {e.strerror or e}", hidden(repo))) from None
        procs.append(_Proc(cmd_proc, signal.SIGTERM))
        restic = await self._spawn(repo, args, procs, extra_env, stdin=asyncio.subprocess.PIPE)
        cmd_err = _Stderr()
        assert cmd_proc.stdout is not None and cmd_proc.stderr is not None and restic.stdin is not None

        async def pump() -> int | None:
            """The command's exit code, or None when restic stopped reading first."""
            assert cmd_proc.stdout is not None and restic.stdin is not None
            try:
                while chunk := await cmd_proc.stdout.read(PUMP_CHUNK):
                    restic.stdin.write(chunk)
                    await restic.stdin.drain()
                code = await cmd_proc.wait()
                if code == 0:
                    restic.stdin.close()
                    await restic.stdin.wait_closed()
                return code
            except (BrokenPipeError, ConnectionResetError):
                return None

        collecting = asyncio.ensure_future(self._collect(restic, on_line))
        cmd_errors = asyncio.ensure_future(_read_lines(cmd_proc.stderr, cmd_err.add))
        pumping = asyncio.ensure_future(pump())
        try:
            await asyncio.wait({pumping, collecting}, return_when=asyncio.FIRST_COMPLETED)
            if not pumping.done():  # restic ended before reading everything: the command is of no use now
                await _stop(_Proc(cmd_proc, signal.SIGTERM), self.kill_grace)
                return await collecting
            code = pumping.result()
            if code is not None and code != 0:
                # restic still waits for EOF: the caller's cleanup interrupts it before it saves a snapshot.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(cmd_errors), 1.0)
                tail = "; ".join(list(cmd_err.lines)[-3:]) or "no error output"
                message = f"{Path(command[0]).name} exited with code {code}: {tail}"  # argv may hold credentials
                raise EngineError("Failed", scrub(message, hidden(repo)))
            if code is None:
                await _stop(_Proc(cmd_proc, signal.SIGTERM), self.kill_grace)
            return await collecting
        finally:
            for task in (pumping, collecting, cmd_errors):
                task.cancel()

    # ------------------------------------------------------------ process plumbing

    async def _run(
        self, repo: RepositoryTarget, args: list[str], *, extra_env: Mapping[str, str] | None = None
    ) -> _Outcome:
        async def work(procs: list[_Proc]) -> _Outcome:
            return await self._exec(repo, args, procs, extra_env=extra_env)

        return await self._guarded(work, None, args[0])

    async def _json(
        self, repo: RepositoryTarget, args: list[str], what: str, *, extra_env: Mapping[str, str] | None = None
    ) -> Any:
        outcome = await self._run(repo, args, extra_env=extra_env)
        if outcome.returncode != 0:
            raise self._error(repo, outcome, what)
        try:
            return json.loads(outcome.stdout or "null")
        except ValueError:
            raise EngineError("Failed", f"restic {what} printed no valid JSON") from None

    async def _exists(self, repo: RepositoryTarget) -> bool:
        outcome = await self._run(repo, ["cat", "config"])
        if outcome.returncode == 0:
            return True
        error = self._error(repo, outcome, "cat config")
        if error.reason == "RepositoryNotFound":
            return False
        raise error

    async def _exec(
        self,
        repo: RepositoryTarget,
        args: list[str],
        procs: list[_Proc],
        *,
        on_line: Callable[[str], None] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> _Outcome:
        proc = await self._spawn(repo, args, procs, extra_env or {}, stdin=asyncio.subprocess.DEVNULL)
        return await self._collect(proc, on_line)

    async def _spawn(
        self,
        repo: RepositoryTarget,
        args: list[str],
        procs: list[_Proc],
        extra_env: Mapping[str, str],
        *,
        stdin: int,
    ) -> asyncio.subprocess.Process:
        cache = ["--cache-dir", str(repo.cache_dir)] if repo.cache_dir is not None else ["--no-cache"]
        argv = [self.binary, "-r", repo.url, *repo.options, *cache, *args]
        logger.debug("running %s", scrub(shlex.join(argv), hidden(repo)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
        env.update(repo.env)
        env.update(extra_env)
        env["RESTIC_PASSWORD"] = repo.password
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
                limit=LINE_LIMIT,
                preexec_fn=_die_with_parent(signal.SIGINT),
            )
        except OSError as e:
            raise EngineError("Failed", f"cannot run {self.binary}: {e.strerror or e}") from None
        procs.append(_Proc(proc, signal.SIGINT))
        return proc

    async def _collect(self, proc: asyncio.subprocess.Process, on_line: Callable[[str], None] | None) -> _Outcome:
        assert proc.stdout is not None and proc.stderr is not None
        err = _Stderr()
        chunks: list[str] = []
        if on_line is None:

            async def read_out() -> None:
                assert proc.stdout is not None
                chunks.append((await proc.stdout.read()).decode(errors="replace"))

            reader: Awaitable[None] = read_out()
        else:
            reader = _read_lines(proc.stdout, on_line)
        await _gather(reader, _read_lines(proc.stderr, err.add))
        code = await proc.wait()
        return _Outcome(code, "".join(chunks), err)

    async def _guarded(self, work: Callable[[list[_Proc]], Awaitable[T]], timeout: float | None, what: str) -> T:
        """Run ``work``; on timeout, error or cancellation stop every process it started."""
        procs: list[_Proc] = []
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await work(procs)
        except TimeoutError:
            if deadline.expired():
                message = f"restic {what} did not finish within {timeout:g}s and was stopped"
                raise EngineError("Timeout", message) from None
            raise
        finally:
            await asyncio.shield(_stop_all(procs, self.kill_grace))

    def _error(
        self, repo: RepositoryTarget, outcome: _Outcome, what: str, secrets: Sequence[str] | None = None
    ) -> EngineError:
        reason, message = classify(outcome.stderr.text, outcome.returncode)
        return EngineError(reason, scrub(f"restic {what}: {message}", hidden(repo) if secrets is None else secrets))


# ---------------------------------------------------------------- helpers


def classify(stderr: str, returncode: int) -> tuple[EngineErrorReason, str]:
    """The reason and user-facing message for a failed restic run (not yet scrubbed)."""
    lower = stderr.lower()
    reason: EngineErrorReason = "Failed"
    for candidate, fragments in _CLASSES:
        if any(f in lower for f in fragments):
            reason = candidate
            break
    lines = [_ANSI.sub("", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("[")]
    fatal = next((line for line in reversed(lines) if line.startswith("Fatal:")), None)
    message = (fatal.removeprefix("Fatal:").strip() if fatal else (lines[-1] if lines else "")) or (
        f"exited with code {returncode}"
    )
    return reason, message


@dataclass(frozen=True)
class _Proc:
    process: asyncio.subprocess.Process
    first_signal: signal.Signals


async def _stop(proc: _Proc, grace: float) -> None:
    process = proc.process
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, proc.first_signal)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _stop_all(procs: Sequence[_Proc], grace: float) -> None:
    await asyncio.gather(*(_stop(p, grace) for p in procs))


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    """Like ``asyncio.gather`` but cancels the rest when one fails."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


async def _read_lines(stream: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    while line := await stream.readline():
        on_line(line.decode(errors="replace"))


class _Listing:
    """What ``restic ls --json`` says about a snapshot: its paths and how much a full restore writes."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.files = 0
        self.bytes = 0

    def take(self, line: str) -> None:
        doc = _json_object(line)
        if doc is None:
            return
        if doc.get("struct_type") == "snapshot":
            self.paths = [str(p) for p in doc.get("paths") or ()]
        elif doc.get("struct_type") == "node" and doc.get("type") == "file":
            self.files += 1
            self.bytes += int(doc.get("size") or 0)

    def progress(self, files: int, size: int, elapsed: float) -> Progress:
        # Filters make the totals an upper bound: never claim completion before restic is done.
        done = min(0.99, size / self.bytes) if self.bytes else 0.0
        rate = size / elapsed if elapsed > 0 else 0.0
        return Progress(
            seconds_elapsed=elapsed,
            seconds_remaining=(self.bytes - size) / rate if rate > 0 and self.bytes > size else None,
            percent_done=done,
            total_files=self.files,
            files_done=min(files, self.files),
            total_bytes=self.bytes,
            bytes_done=min(size, self.bytes),
        )


def _measure(root: Path) -> tuple[int, int]:
    """Regular files under ``root`` and their bytes (restic creates files at full size: a lower bound)."""
    files = size = 0
    for directory, _dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


def _json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _progress(doc: Mapping[str, Any]) -> Progress:
    remaining = doc.get("seconds_remaining")
    return Progress(
        seconds_elapsed=float(doc.get("seconds_elapsed") or 0),
        seconds_remaining=float(remaining) if remaining is not None else None,
        percent_done=float(doc.get("percent_done") or 0),
        total_files=int(doc.get("total_files") or 0),
        files_done=int(doc.get("files_done") or 0),
        total_bytes=int(doc.get("total_bytes") or 0),
        bytes_done=int(doc.get("bytes_done") or 0),
    )


def _backup_summary(doc: Mapping[str, Any], started: datetime, ended: datetime) -> BackupSummary:
    def num(key: str) -> int:
        return int(doc.get(key) or 0)

    return BackupSummary(
        snapshot_id=str(doc["snapshot_id"]),
        files_new=num("files_new"),
        files_changed=num("files_changed"),
        files_unmodified=num("files_unmodified"),
        dirs_new=num("dirs_new"),
        dirs_changed=num("dirs_changed"),
        dirs_unmodified=num("dirs_unmodified"),
        data_added=num("data_added"),
        total_files_processed=num("total_files_processed"),
        total_bytes_processed=num("total_bytes_processed"),
        total_duration=float(doc.get("total_duration") or (ended - started).total_seconds()),
        started=started,
        ended=ended,
    )


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _error_detail(error: Any) -> str:
    """restic 0.14 marshals Go errors as their fields, e.g. ``{"Op": "read", "Path": ..., "Err": 5}``."""
    if isinstance(error, dict):
        if error.get("message"):
            return str(error["message"])
        errno = error.get("Err")
        text = os.strerror(errno) if isinstance(errno, int) else ""
        return f"{error['Op']}: {text}" if error.get("Op") and text else text
    return str(error) if error else ""


def _is_check_problem(line: str) -> bool:
    lower = line.lower()
    noise = ("create exclusive lock", "load indexes", "check all packs", "check snapshots", "no errors were found")
    if not line or line.startswith("[") or any(n in lower for n in noise):
        return False
    return any(w in lower for w in ("error", "not referenced", "missing", "invalid", "damaged", "fatal"))


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A child-side hook: deliver ``sig`` to the child when the process that started it dies.

    Processes run in their own group (so a timeout can stop them whole), which also means a SIGKILL of the
    task process would leave them running, unseen. Linux's parent-death signal closes that gap; restic gets
    SIGINT, the one signal on which it removes its lock.
    """

    def hook() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return hook
