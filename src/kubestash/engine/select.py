"""Which engine moves the data: ``restic`` (the binary, KubeStash's own choice) or ``native`` (this package).

One setting for a whole installation: ``kubestash up --engine`` / ``kubestash operator --engine`` set the
``KUBESTASH_ENGINE`` environment variable, which the operator and every task process it starts read. Both
engines write the same restic repositories, so switching is safe at any time, in either direction.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from kubestash.engine.base import Engine

ENGINE_ENV = "KUBESTASH_ENGINE"
EngineName = Literal["restic", "native"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "native"


def engine_named(name: str) -> Engine:
    """A new engine of that name; ValueError naming the choices for anything else."""
    if name == "restic":
        from kubestash.engine.restic import ResticEngine

        return ResticEngine()
    if name == "native":
        from kubestash.engine.native.engine import NativeEngine

        return NativeEngine()
    raise ValueError(f"{ENGINE_ENV}={name!r} is not one of {', '.join(ENGINE_NAMES)}")


def configured_engine() -> Engine:
    """The engine ``KUBESTASH_ENGINE`` names (default ``native``)."""
    return engine_named(os.environ.get(ENGINE_ENV, "").strip() or DEFAULT_ENGINE)
