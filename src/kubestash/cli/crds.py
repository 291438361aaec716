"""``kubestash crds``: print or write the CustomResourceDefinitions generated from the models.

Printing to stdout makes ``kubestash crds | kubectl apply -f -`` the install step;
``--output-dir`` regenerates ``deploy/crds/`` (a test fails when that copy drifts).
"""

from __future__ import annotations

from pathlib import Path

import click

from kubestash.api.crd import all_crds, write_crds
from kubestash.api.manifests import dump_yaml


@click.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, dir_okay=True, writable=True, path_type=Path),
    default=None,
    help="Write one <group>_<plural>.yaml file per CRD here instead of printing them.",
)
def crds(output_dir: Path | None) -> None:
    """Print the CustomResourceDefinitions of every KubeStash kind."""
    if output_dir is None:
        click.echo(dump_yaml(all_crds()), nl=False)
        return
    for path in write_crds(output_dir):
        click.echo(str(path))
