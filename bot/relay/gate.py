"""The answer gate: how many big relay answers this process reads, decodes and holds at once.

Why: a 4K answer is 35.5 MB of base64 that becomes a 26.6 MB picture, and that picture stays
in memory until the job has fitted it under the upload limit (bot/imaging.py: ~0.4 s of CPU,
as many at a time as there are CPUs). With 16 jobs whose answers all arrive together, all 16
pictures were decoded at once and then sat in the fitting queue: 16 x 26.6 MB, ~630 MB peak
RSS (``python -m bench bot --jobs 16``). A gate around the decoding alone did not change that
(measured: 605-640 MB), because the pictures wait *after* decoding. So a job's slot is held
from the moment its answer turns out big until its picture has been fitted (or the job ends);
answers beyond ``SLOTS`` wait unread, their bytes in the kernel's socket buffers (the relay's
send simply waits), and are decoded as pictures leave. Figures: bench/results/2026-12-02-speed.md.

How a slot follows a job: :func:`job_scope` (bot/services.py, around each job) puts a
:class:`Holder` in a context variable, which every task the job starts copies. The relay
client's :func:`slot` takes the slot into it; :func:`picture_fitted` (bot/imaging.py, after a
fit) and the end of the job give it back. Outside a job (the CLI, tests) a slot lasts as long
as the decoding.

An answer enters the gate only once ``AFTER`` bytes of it have arrived: error bodies, text
and small pictures never wait. A job already holding a slot (a retry, a second picture) never
waits for another. And nobody waits longer than ``MAX_WAIT`` seconds: after that the answer
goes on without a slot, so a relay that trickles its answer (and holds a slot all along)
delays the others, bounded, and never stalls them.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Two pictures per CPU: one being fitted (the fitting pool has a thread per CPU), one decoded
# and ready for it, so the pool never idles waiting for an answer to be read.
SLOTS = 2 * _cpus()
AFTER = 1 * 2**20
# Long enough to outlast the fitting queue under a burst (16 4K jobs on 2 cores: a few
# seconds), short enough for relays that give up on a client not reading (commonly 60 s).
MAX_WAIT = 30.0

# asyncio primitives belong to one event loop; the bot has one, tests and the CLI may make more.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(SLOTS)
    return gate


class Holder:
    """The slot one job holds, if any."""

    __slots__ = ("_gate",)

    def __init__(self) -> None:
        self._gate: asyncio.Semaphore | None = None

    @property
    def holding(self) -> bool:
        return self._gate is not None

    def take(self, gate: asyncio.Semaphore) -> None:
        self.release()
        self._gate = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()


HOLDER: contextvars.ContextVar[Holder | None] = contextvars.ContextVar("answer_gate_holder", default=None)


@contextmanager
def job_scope() -> Iterator[Holder]:
    """Around one job: the slot its answer takes is given back when the job ends, at the latest."""
    holder = Holder()
    token = HOLDER.set(holder)
    try:
        yield holder
    finally:
        holder.release()
        HOLDER.reset(token)


def picture_fitted() -> None:
    """The job's picture has been fitted (the big decoded copy can go): its slot is free."""
    holder = HOLDER.get()
    if holder is not None:
        holder.release()


@asynccontextmanager
async def slot() -> AsyncIterator[bool]:
    """Enter the gate for a big answer: True with a slot (kept by the job's :class:`Holder`, if
    there is one, else until the block ends), False after ``MAX_WAIT`` without one."""
    holder = HOLDER.get()
    if holder is not None and holder.holding:
        yield True
        return
    gate = _gate()
    try:
        # (asyncio.timeout cancels acquire() itself, which passes on a wake-up it got: no slot
        # is lost, unlike wait_for's race between its timeout and a completed acquire)
        async with asyncio.timeout(MAX_WAIT):
            await gate.acquire()
    except TimeoutError:
        yield False
        return
    if holder is not None:
        holder.take(gate)
        yield True
        return
    try:
        yield True
    finally:
        gate.release()
