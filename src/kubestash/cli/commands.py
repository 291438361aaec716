"""The ``kubestash`` click group. Subcommands are imported when they run: ``kubestash trigger`` should not pay
for importing the API server, the controllers or every model (interpreter start-up is part of every backup a
user triggers by hand). :mod:`kubestash.cli.main` is the entry point in front of it.
"""

from __future__ import annotations

import importlib

import click

from kubestash import __version__

COMMANDS = {
    "crds": "kubestash.cli.crds:crds",
    "validate": "kubestash.cli.validate:validate",
    "up": "kubestash.cli.up:up",
    "apiserver": "kubestash.cli.up:apiserver",
    "operator": "kubestash.cli.up:operator",
    "trigger": "kubestash.cli.backup:trigger",
    "pause": "kubestash.cli.backup:pause",
    "resume": "kubestash.cli.backup:resume",
    "get": "kubestash.cli.backup:get",
    "download": "kubestash.cli.download:download",
    "unlock": "kubestash.cli.repository:unlock",
    "password": "kubestash.cli.repository:password",
    "pw": "kubestash.cli.repository:pw",
    "repo": "kubestash.cli.repo:repo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are ``module:attribute`` strings, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubestash")
def main() -> None:
    """KubeStash: Kubernetes-native backup and restore."""
