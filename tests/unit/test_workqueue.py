"""The work queue's guarantees, which every reconciler's correctness rests on."""

from __future__ import annotations

import asyncio

import pytest

from kubestash.runtime.workqueue import ShutDown, WorkQueue


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_waiting_key_is_queued_once() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for key in ["a", "b", "a", "a", "b"]:
            queue.add(key)
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == ["a", "b"]

    run(scenario())


def test_a_key_being_processed_is_requeued_after_done_not_handed_out_twice() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        first = await queue.get()
        queue.add("a")
        assert len(queue) == 0, "a key in processing is not handed to a second worker"
        queue.done(first)
        assert len(queue) == 1
        assert await queue.get() == "a"

    run(scenario())


def test_backoff_grows_per_key_and_forget_resets_it() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.04)
        delays = [queue.add_rate_limited("a") for _ in range(4)]
        assert delays == [0.01, 0.02, 0.04, 0.04]
        assert queue.add_rate_limited("b") == 0.01
        queue.forget("a")
        assert queue.failures("a") == 0
        assert await asyncio.wait_for(queue.get(), 1) in {"a", "b"}

    run(scenario())


def test_add_after_delays_and_keeps_the_earliest() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        queue.add_after("a", 0.2)
        queue.add_after("a", 0.05)
        queue.add_after("a", 5)
        assert await asyncio.wait_for(queue.get(), 1) == "a"
        assert 0.04 <= loop.time() - start < 0.2

    run(scenario())


def test_shutdown_releases_waiting_workers() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        queue.shutdown()
        with pytest.raises(ShutDown):
            await asyncio.wait_for(waiter, 1)

    run(scenario())
