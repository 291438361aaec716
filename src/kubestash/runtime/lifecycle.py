"""Process lifecycle: wait for SIGINT/SIGTERM so servers and controllers shut down cleanly."""

from __future__ import annotations

import asyncio
import signal


async def wait_for_shutdown_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
