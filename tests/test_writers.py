"""The shared SQLite connection's writer turns: one at a time, FIFO, an urgent writer next."""

from __future__ import annotations

import asyncio

from bot.db.writers import URGENT, WriterLock


async def test_an_urgent_writer_goes_before_those_already_waiting_and_the_rest_keep_their_order() -> None:
    lock, order, inside = WriterLock(), [], []

    async def writer(name: str, priority: int = 1) -> None:
        async with lock.turn(priority):
            inside.append(name)
            assert len(inside) == 1, "two writers at once"
            order.append(name)
            await asyncio.sleep(0.01)
            inside.remove(name)

    first = asyncio.create_task(writer("job-1"))
    await asyncio.sleep(0)  # job-1 holds the turn
    queued = [asyncio.create_task(writer(f"job-{i}")) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    urgent = asyncio.create_task(writer("ack", URGENT))
    await asyncio.gather(first, *queued, urgent)
    assert order == ["job-1", "ack", "job-2", "job-3", "job-4"]


async def test_a_writer_cancelled_while_waiting_or_as_it_is_handed_the_turn_never_stalls_the_rest() -> None:
    lock = WriterLock()
    done: list[str] = []

    async def writer(name: str) -> None:
        async with lock.turn():
            await asyncio.sleep(0.01)
            done.append(name)

    holder = asyncio.create_task(writer("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(writer("b"))
    after = asyncio.create_task(writer("c"))
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while waiting
    await asyncio.gather(holder, after, return_exceptions=True)
    assert done == ["a", "c"] and gone.cancelled()

    # Handed the turn and cancelled before it ran: the turn passes on.
    holder = asyncio.create_task(writer("d"))
    await asyncio.sleep(0)
    handed = asyncio.create_task(writer("e"))
    last = asyncio.create_task(writer("f"))
    await asyncio.sleep(0)
    while "d" not in done:
        await asyncio.sleep(0)
    handed.cancel()
    await asyncio.wait_for(asyncio.gather(last, return_exceptions=True), 1)
    assert done[-1] == "f" and "e" not in done
    async with lock.turn():  # and the lock is free again
        pass
