"""``kubestash up`` and ``kubestash apiserver``: run KubeStash on this machine, no cluster needed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from kubestash.engine.select import DEFAULT_ENGINE, ENGINE_ENV, ENGINE_NAMES

DEFAULT_DATA_DIR = Path.home() / ".kubestash"


def _options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--watch-history",
        default=50_000,
        show_default=True,
        help="Change events kept for watches to resume from.",
    )(fn)
    fn = click.option("--insecure-http", is_flag=True, help="Plain HTTP without authentication (testing only).")(fn)
    fn = click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")(fn)
    fn = click.option("--port", default=6443, show_default=True, help="Port to listen on (0 picks a free one).")(fn)
    fn = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="Where objects, TLS material and the kubeconfig are kept.",
    )(fn)
    return fn


def _engine_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--engine",
        type=click.Choice(ENGINE_NAMES),
        envvar=ENGINE_ENV,
        default=DEFAULT_ENGINE,
        show_default=True,
        help=f"What moves the data: the restic binary or the built-in native engine (env {ENGINE_ENV}).",
    )(fn)


def _use_engine(engine: str) -> None:
    """The operator and every task process it starts (they inherit the environment) use ``engine``."""
    os.environ[ENGINE_ENV] = engine


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve(
    data_dir: Path,
    port: int,
    host: str,
    insecure_http: bool,
    watch_history: int,
    *,
    install_crds: bool = True,
    with_controllers: bool = False,
) -> None:
    from kubestash.apiserver.server import ServerConfig, run  # not at import: every CLI command would pay it

    _log_to_stderr()
    config = ServerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        insecure_http=insecure_http,
        watch_history=watch_history,
        install_crds=install_crds,
    )
    click.echo(f"kubeconfig: {config.kubeconfig_path}")
    click.echo(f"  export KUBECONFIG={config.kubeconfig_path}")
    click.echo("  kubectl api-resources --categories kubestash")
    run(config, with_controllers=with_controllers)


@click.command()
@_options
@_engine_option
def up(data_dir: Path, port: int, host: str, insecure_http: bool, watch_history: int, engine: str) -> None:
    """Run KubeStash on this machine: the bundled API server and the controllers."""
    _use_engine(engine)
    _serve(data_dir, port, host, insecure_http, watch_history, with_controllers=True)


@click.command()
@_options
@click.option(
    "--without-kubestash-crds",
    is_flag=True,
    help="Do not install KubeStash's CRDs: a plain API server, like an empty cluster.",
)
def apiserver(
    data_dir: Path, port: int, host: str, insecure_http: bool, watch_history: int, without_kubestash_crds: bool
) -> None:
    """Run only the bundled Kubernetes-compatible API server."""
    _serve(data_dir, port, host, insecure_http, watch_history, install_crds=not without_kubestash_crds)


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Kubeconfig of the API server to manage (default: $KUBECONFIG or ~/.kube/config).",
)
@_engine_option
def operator(kubeconfig: Path | None, engine: str) -> None:
    """Run the KubeStash controllers against any Kubernetes API server."""
    _use_engine(engine)
    import asyncio
    import contextlib

    from kubestash.controllers.manager import Operator, client_from
    from kubestash.runtime.lifecycle import wait_for_shutdown_signal

    _log_to_stderr()

    async def main() -> None:
        ops = Operator(client_from(kubeconfig), kubeconfig=kubeconfig, prewarm=True)
        await ops.start()
        try:
            await wait_for_shutdown_signal()
        finally:
            await ops.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
