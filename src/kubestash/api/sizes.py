"""Sizes as KubeStash writes them in status (``12.222 MiB``), and back."""

from __future__ import annotations


def human_size(size: int) -> str:
    """``12.222 MiB`` style, as KubeStash prints sizes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.3f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str | None) -> int:
    if not text:
        return 0
    number, _, unit = text.partition(" ")
    factors = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
    try:
        return int(float(number) * factors.get(unit or "B", 1))
    except ValueError:
        return 0
