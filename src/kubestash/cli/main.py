"""The ``kubestash`` command (also installed as the kubectl plugin ``kubectl-kubestash``).

``main`` is the console-script entry point. Importing this module imports nothing else: ``kubestash trigger``
command lines that :func:`kubestash.cli.triggering.fast_main` parses run without click (importing click alone
takes about 0.06 s here, a third of the start-up budget of a hand-triggered backup; see that module). Everything
else -- other subcommands, ``--help``, arguments the fast path does not read exactly -- goes to the click group
in :mod:`kubestash.cli.commands`, which ``main`` stands in for (``main.get_command``, ``CliRunner().invoke(main,
...)`` reach the group).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click


def group() -> click.Group:
    """The click group with every subcommand."""
    from kubestash.cli.commands import main as click_group

    return click_group


class Entry:
    """Calls the fast ``trigger`` path when it applies, else the click group; attributes are the group's."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and sys.argv[1:2] == ["trigger"]:
            from kubestash.cli.triggering import fast_main

            code = fast_main(sys.argv[2:])
            if code is not None:
                sys.exit(code)
        return group()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(group(), name)


main = Entry()
