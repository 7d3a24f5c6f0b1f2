"""The answer gate (bot/relay/gate.py): a job's big answer holds a slot until its picture is
fitted; others wait unread, never longer than MAX_WAIT; a job never waits for itself."""

from __future__ import annotations

import asyncio

import pytest

from bot.relay import gate


@pytest.fixture
def one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "SLOTS", 1)


async def test_a_jobs_slot_lasts_until_its_picture_is_fitted(one_slot: None) -> None:
    order: list[str] = []
    fitted = asyncio.Event()

    async def job(name: str) -> None:
        with gate.job_scope():
            async with gate.slot() as got:
                assert got
                order.append(f"{name} decodes")
            if name == "first":
                await fitted.wait()
            order.append(f"{name} fitted")
            gate.picture_fitted()

    first = asyncio.create_task(job("first"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(job("second"))
    await asyncio.sleep(0.05)
    assert order == ["first decodes"]  # the second answer waits while the first picture is held
    fitted.set()
    await asyncio.gather(first, second)
    assert order == ["first decodes", "first fitted", "second decodes", "second fitted"]


async def test_the_end_of_a_job_gives_its_slot_back(one_slot: None) -> None:
    with gate.job_scope():
        async with gate.slot():
            pass
        with pytest.raises(TimeoutError):  # held by the job (no fit happened)
            async with asyncio.timeout(0.05):
                await gate._gate().acquire()
    async with asyncio.timeout(1):
        async with gate.slot() as got:
            assert got


async def test_a_job_holding_a_slot_does_not_wait_for_another(one_slot: None) -> None:
    with gate.job_scope():
        async with gate.slot():
            pass
        async with asyncio.timeout(1):  # a retry or a second picture of the same job
            async with gate.slot() as got:
                assert got


async def test_nobody_waits_longer_than_max_wait(one_slot: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "MAX_WAIT", 0.05)
    with gate.job_scope():
        async with gate.slot():
            pass

        async def other() -> bool:
            with gate.job_scope():
                async with gate.slot() as got:
                    return got

        assert await asyncio.wait_for(other(), 2) is False  # went on without a slot
