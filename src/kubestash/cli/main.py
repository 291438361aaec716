"""The ``kubestash`` command (also installed as the kubectl plugin ``kubectl-kubestash``).

``main`` is the console-script entry point. Importing this module imports nothing else: ``kubestash trigger``
command lines that :func:`kubestash.cli.triggering.fast_main` parses run without click (importing click alone
takes about 0.06 s here, a third of the start-up budget of a hand-triggered backup; see that module). Everything
else -- other subcommands, ``--help``, arguments the fast path does not read exactly -- goes to the click group
in :mod:`kubestash.cli.commands`, which ``main`` stands in for (``main.get_command``, ``CliRunner().invoke(main,
...)`` reach the group).

The command line leaves through :func:`leave`, without the interpreter's finalization: obstore's tokio threads
hand results to asyncio with ``call_soon_threadsafe``, and one may still be inside that call (writing the
wake-up byte, the GIL released) when the command's last ``await`` has its result. Python 3.11 ends a thread
that asks for the GIL during finalization with ``pthread_exit``, which aborts a Rust thread: about one
``repo init`` on Azure in twenty exited with SIGABRT after succeeding. Task processes (``python -m
kubestash.cli.task``) leave the same way.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

    import click


def group() -> click.Group:
    """The click group with every subcommand."""
    from kubestash.cli.commands import main as click_group

    return click_group


class Entry:
    """Calls the fast ``trigger`` path when it applies, else the click group; attributes are the group's."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return group()(*args, **kwargs)
        run_and_leave(self._console)

    @staticmethod
    def _console() -> None:
        if sys.argv[1:2] == ["trigger"]:
            from kubestash.cli.triggering import fast_main

            code = fast_main(sys.argv[2:])
            if code is not None:
                sys.exit(code)
        group()()

    def __getattr__(self, name: str) -> Any:
        return getattr(group(), name)


def run_and_leave(command: Callable[[], object]) -> NoReturn:
    """Run a command line's body (a click command in standalone mode) and :func:`leave` with its status."""
    try:
        command()
    except SystemExit as done:
        leave(done.code)
    leave(0)


def leave(code: object) -> NoReturn:
    """Exit as ``sys.exit(code)`` would, minus finalization: threads joined, atexit handlers run, streams
    flushed, then ``os._exit``."""
    import atexit
    import os
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    shutdown = getattr(threading, "_shutdown", None)  # what finalization does first: join non-daemon threads
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1  # a closed pipe: the output did not all arrive
    os._exit(status)


main = Entry()
