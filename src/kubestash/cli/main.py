"""The ``kubestash`` command (also installed as the kubectl plugin ``kubectl-kubestash``)."""

from __future__ import annotations

import click

from kubestash import __version__
from kubestash.cli.backup import get, pause, resume, trigger
from kubestash.cli.crds import crds
from kubestash.cli.download import download
from kubestash.cli.repository import password, pw, unlock
from kubestash.cli.up import apiserver, operator, up
from kubestash.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubestash")
def main() -> None:
    """KubeStash: Kubernetes-native backup and restore."""


main.add_command(crds)
main.add_command(validate)
main.add_command(up)
main.add_command(apiserver)
main.add_command(operator)
main.add_command(trigger)
main.add_command(pause)
main.add_command(resume)
main.add_command(get)
main.add_command(unlock)
main.add_command(password)
main.add_command(pw)
main.add_command(download)
