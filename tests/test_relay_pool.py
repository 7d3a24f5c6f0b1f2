from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import store
from bot.guild_config import ConfigError
from bot.relay.client import RelayClient
from bot.relay.types import GenerationRequest, NoImage, RelayFailed, RelayTimeout
from bot.relays.pool import NoRelay, RelayPool
from bot.relays.store import RelayStore
from bot.secrets import load_keyring
from bot.settings import DefaultRelay, Settings
from bot.urlguard import UnsafeURL, make_guard
from tests.doubles.relay_double import Behaviour, RelayDouble

GUILD = 77
SMALL = {"width": 64, "height": 48}
KEY_A, KEY_B = "sk-relayA-0123456789abcdef", "sk-relayB-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def request() -> GenerationRequest:
    return GenerationRequest(prompt="a banana on the moon", model="gemini-3.1-flash-image-preview", size="1K")


def settings(data_dir: Path, relay: DefaultRelay | None = None, share: bool = True) -> Settings:
    return Settings(discord_token="", data_dir=data_dir, relay=relay, share_default_relay=share)


@pytest.fixture
async def db(data_dir: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await store.connect(data_dir / "bot.sqlite3")
    yield conn
    await conn.close()


@pytest.fixture
async def client() -> AsyncIterator[RelayClient]:
    # Untrusted (admin) relays go through the URL guard on every request; the doubles live on
    # 127.0.0.1, which the operator allows here as NB_ALLOW_PRIVATE_RELAYS=1 would.
    c = RelayClient(max_attempts=2, backoff_base=0.01, max_backoff=0.05, timeout=20, url_guard=make_guard(True))
    yield c
    await c.aclose()


@pytest.fixture
def doubles() -> Any:
    with RelayDouble(api_key=KEY_A) as a, RelayDouble(api_key=KEY_B) as b:
        a.default = Behaviour("image", **SMALL)
        b.default = Behaviour("image", **SMALL)
        yield a, b


async def two_relays(db: aiosqlite.Connection, data_dir: Path, a: RelayDouble, b: RelayDouble, clock: Clock) -> RelayStore:
    relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True, clock=clock)
    await relays.add(GUILD, name="first", base_url=a.url, api_key=KEY_A, dialect="gemini", auth="query")
    await relays.add(GUILD, name="second", base_url=b.url, api_key=KEY_B, dialect="gemini", auth="x-goog-api-key")
    return relays


async def test_failover_to_the_second_relay_and_the_first_is_skipped_then_retried(
    db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any
) -> None:
    a, b = doubles
    a.default = Behaviour("error", status=503, message="upstream overloaded")
    clock = Clock()
    relays = await two_relays(db, data_dir, a, b, clock)
    pool = RelayPool(client, relays, settings(data_dir), clock=clock)

    result, name = await pool.generate(GUILD, request())
    assert name == "second" and result.image == b.images_served[-1]
    tried_first = len(a.requests)
    assert tried_first == 2  # the client's own retries, then failover

    for _ in range(2):  # the next jobs go straight to the second relay
        _, name = await pool.generate(GUILD, request())
        assert name == "second"
    assert len(a.requests) == tried_first  # the resting relay was not touched
    assert len(b.requests) == 3

    first = (await relays.list(GUILD))[0]
    assert first.fail_count == 1 and first.resting(clock.now)
    assert "503" in first.last_error and "upstream overloaded" in first.last_error

    # After its rest the first relay is tried again; now healthy, it serves and is cleared.
    a.default = Behaviour("image", **SMALL)
    clock.now = first.skip_until + 1
    _, name = await pool.generate(GUILD, request())
    assert name == "first"
    healed = (await relays.list(GUILD))[0]
    assert healed.fail_count == 0 and not healed.resting(clock.now)


async def test_rest_grows_with_repeated_failures(db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any) -> None:
    a, b = doubles
    a.default = Behaviour("error", status=502)
    clock = Clock()
    relays = await two_relays(db, data_dir, a, b, clock)
    pool = RelayPool(client, relays, settings(data_dir), clock=clock)
    rests = []
    for _ in range(3):
        await pool.generate(GUILD, request())
        first = (await relays.list(GUILD))[0]
        rests.append(first.skip_until - clock.now)
        clock.now = first.skip_until + 1
    assert rests == [60.0, 120.0, 240.0]


async def test_refusals_and_bad_requests_are_not_failed_over(
    db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any
) -> None:
    a, b = doubles
    clock = Clock()
    relays = await two_relays(db, data_dir, a, b, clock)
    pool = RelayPool(client, relays, settings(data_dir), clock=clock)

    a.enqueue(Behaviour("blocked", reason="SAFETY"))
    with pytest.raises(NoImage):
        await pool.generate(GUILD, request())

    a.enqueue(Behaviour("error", status=400, message="Request contains an invalid argument."))
    with pytest.raises(RelayFailed) as info:
        await pool.generate(GUILD, request())
    assert info.value.status == 400 and not info.value.retryable
    assert info.value.relay_name == "first"  # type: ignore[attr-defined]

    assert b.requests == []  # another relay would not have helped
    assert (await relays.list(GUILD))[0].fail_count == 0  # and the first one is not to blame


async def test_when_every_relay_rests_the_one_back_soonest_is_still_tried(
    db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any
) -> None:
    a, b = doubles
    a.default = b.default = Behaviour("error", status=503)
    clock = Clock()
    relays = await two_relays(db, data_dir, a, b, clock)
    pool = RelayPool(client, relays, settings(data_dir), clock=clock)
    with pytest.raises(RelayFailed) as info:
        await pool.generate(GUILD, request())
    assert info.value.status == 503 and info.value.relay_name == "second"  # type: ignore[attr-defined]
    assert (len(a.requests), len(b.requests)) == (2, 2)

    b.default = Behaviour("image", **SMALL)  # both rest until the same moment: the first in order goes
    clock.now += 10
    with pytest.raises(RelayFailed):
        await pool.generate(GUILD, request())
    assert (len(a.requests), len(b.requests)) == (4, 2)  # one relay tried, not both hammered


async def test_server_without_relays_uses_the_operator_relay_only_if_shared(
    db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any
) -> None:
    a, _ = doubles
    operator = DefaultRelay(url=a.url, dialect="gemini", auth="query", api_key=KEY_A)
    relays = RelayStore(db, load_keyring(None, data_dir))

    _, name = await RelayPool(client, relays, settings(data_dir, operator, share=True)).generate(GUILD, request())
    assert name == "default" and len(a.requests) == 1

    for s in (settings(data_dir, operator, share=False), settings(data_dir, None, share=True)):
        with pytest.raises(NoRelay) as info:
            await RelayPool(client, relays, s).generate(GUILD, request())
        assert info.value.key == "admin.relay.none"
    assert len(a.requests) == 1


async def test_relay_test_reports_latency_or_the_relays_own_message(
    db: aiosqlite.Connection, data_dir: Path, client: RelayClient, doubles: Any
) -> None:
    a, b = doubles
    clock = Clock()
    relays = await two_relays(db, data_dir, a, b, clock)
    pool = RelayPool(client, relays, settings(data_dir), clock=clock)
    assert await pool.probe(GUILD, "second") >= 0.0

    a.enqueue(Behaviour("error", status=403, body="openai", message="This key's quota ran out on 2026-11-01"))
    with pytest.raises(RelayFailed) as info:
        await pool.probe(GUILD, "first")
    assert "This key's quota ran out on 2026-11-01" in info.value.relay_message
    with pytest.raises(NoRelay):
        await pool.probe(GUILD, "nope")


async def test_admin_relay_url_is_checked_again_when_connecting(db: aiosqlite.Connection, data_dir: Path, doubles: Any) -> None:
    a, _ = doubles
    # Saved while private relays were allowed; the operator has since switched that off.
    relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True)
    await relays.add(GUILD, name="lan", base_url=a.url, api_key=KEY_A)
    async with RelayClient(max_attempts=1, url_guard=make_guard(False)) as strict:
        with pytest.raises(RelayFailed) as info:
            await RelayPool(strict, relays, settings(data_dir)).generate(GUILD, request())
    assert info.value.key == "error.url_refused" and not info.value.retryable
    assert a.requests == []  # nothing left the bot


# --- the admin's relay list --------------------------------------------------------------


async def test_add_edit_reorder_remove(db: aiosqlite.Connection, data_dir: Path) -> None:
    ring = load_keyring(None, data_dir)

    async def resolver(host: str, port: int) -> list[str]:
        return {"relay.example": ["93.184.216.34"], "internal.example": ["10.1.1.1"]}[host]

    relays = RelayStore(db, ring, resolver=resolver)
    one = await relays.add(
        GUILD,
        name="one",
        base_url="https://relay.example/",
        api_key=KEY_A,
        dialect="openai-images",
        auth="bearer",
        model_aliases={"gemini-3-pro-image-preview": "nano-banana-pro"},
    )
    assert (one.base_url, one.position, one.key_hint) == ("https://relay.example", 0, "sk-…cdef")
    await relays.add(GUILD, name="two", base_url="https://relay.example/v1beta", api_key=KEY_B)
    await relays.add(GUILD, name="three", base_url="https://relay.example/x", api_key=KEY_B)

    with pytest.raises(ConfigError) as taken:
        await relays.add(GUILD, name="one", base_url="https://relay.example", api_key=KEY_A)
    assert taken.value.key == "admin.relay.name_taken"
    for url, reason in (
        ("http://relay.example", "scheme"),
        ("https://internal.example", "private_address"),
        ("https://169.254.169.254", "metadata"),
    ):
        with pytest.raises(UnsafeURL) as refused:
            await relays.add(GUILD, name="bad", base_url=url, api_key=KEY_A)
        assert refused.value.reason == reason
    with pytest.raises(ConfigError) as bad:
        await relays.add(GUILD, name="x", base_url="https://relay.example", api_key=KEY_A, dialect="grpc")
    assert bad.value.key == "admin.relay.bad_dialect"

    # Editing without a key keeps the stored key; a new key replaces it.
    await relays.edit(GUILD, "one", new_name="uno", base_url="https://relay.example/v2")
    entries = {e.info.name: e for e in await relays.entries(GUILD)}
    assert entries["uno"].config.api_key == KEY_A and entries["uno"].config.base_url == "https://relay.example/v2"
    assert entries["uno"].config.model_aliases == {"gemini-3-pro-image-preview": "nano-banana-pro"}
    assert entries["uno"].config.dialect == "openai-images" and entries["uno"].config.trusted is False
    await relays.edit(GUILD, "uno", api_key="sk-brand-new-key-000000000009")
    assert {e.info.name: e for e in await relays.entries(GUILD)}["uno"].config.api_key == "sk-brand-new-key-000000000009"
    with pytest.raises(UnsafeURL):
        await relays.edit(GUILD, "uno", base_url="https://internal.example")

    assert [r.name for r in await relays.reorder(GUILD, ["three"])] == ["three", "uno", "two"]
    assert [r.name for r in await relays.reorder(GUILD, ["two", "uno"])] == ["two", "uno", "three"]
    with pytest.raises(ConfigError):
        await relays.reorder(GUILD, ["ghost"])
    assert await relays.remove(GUILD, "uno") is True
    assert await relays.remove(GUILD, "uno") is False
    assert [(r.name, r.position) for r in await relays.list(GUILD)] == [("two", 0), ("three", 1)]
    assert await relays.list(GUILD + 1) == []  # another server sees none of them


# --- one deadline per job, failover after a timeout, the per-server breaker ------------------

from bot.relays.breaker import ServerResting  # noqa: E402
from bot.relays.pool import DeadlinePassed, job_deadline  # noqa: E402


async def black_holes(db: aiosqlite.Connection, data_dir: Path, holes: list[RelayDouble], clock: Clock, guild: int = GUILD) -> RelayStore:
    relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True, clock=clock)
    for i, hole in enumerate(holes):
        hole.default = Behaviour("hang")
        await relays.add(guild, name=f"hole{i}", base_url=hole.url, api_key=KEY_A, dialect="gemini", auth="query")
    return relays


async def wait_closed(holes: list[RelayDouble], limit: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while any(h.open_connections for h in holes) and loop.time() < end:
        await asyncio.sleep(0.02)


async def test_five_black_hole_relays_cost_one_deadline_two_relays_and_no_open_connection(db: aiosqlite.Connection, data_dir: Path) -> None:
    holes = [RelayDouble(api_key=KEY_A) for _ in range(5)]
    try:
        clock = Clock()
        relays = await black_holes(db, data_dir, holes, clock)
        async with RelayClient(max_attempts=4, backoff_base=0.01, timeout=0.4, url_guard=make_guard(True)) as client:
            pool = RelayPool(client, relays, settings(data_dir), clock=clock)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RelayFailed) as caught:
                await pool.generate(GUILD, request())
            took = loop.time() - started
        assert took <= job_deadline("1K", 0.4) + 0.3, took
        # The first silent relay, then one more: not five allowances for one job.
        assert [len(h.requests) for h in holes] == [1, 1, 0, 0, 0]
        assert isinstance(caught.value, RelayTimeout)  # the second allowance or the deadline, whichever first
        await wait_closed(holes)
        assert [h.open_connections for h in holes] == [0] * 5
    finally:
        for hole in holes:
            hole.close()


async def test_retries_and_failover_share_one_deadline_and_the_last_attempt_is_cut_and_closed(
    db: aiosqlite.Connection, data_dir: Path
) -> None:
    """A relay answering 503 (retried with backoff) and then a silent one: the silent relay
    gets only the time left, not a full allowance, and its connection is closed."""
    with RelayDouble(api_key=KEY_A) as flaky, RelayDouble(api_key=KEY_A) as hole:
        clock = Clock()
        relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True, clock=clock)
        flaky.default = Behaviour("error", status=503, message="busy")
        hole.default = Behaviour("hang")
        await relays.add(GUILD, name="flaky", base_url=flaky.url, api_key=KEY_A, dialect="gemini", auth="query")
        await relays.add(GUILD, name="hole", base_url=hole.url, api_key=KEY_A, dialect="gemini", auth="query")
        # Per-attempt allowance 1 s, so the deadline is 2 s; the 503s and backoffs take ~1.5 s.
        async with RelayClient(max_attempts=4, backoff_base=0.5, max_backoff=0.5, timeout=1.0, url_guard=make_guard(True)) as client:
            pool = RelayPool(client, relays, settings(data_dir), clock=clock)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DeadlinePassed) as caught:
                await pool.generate(GUILD, request())
            took = loop.time() - started
        assert 1.9 <= took <= 2.3, took  # not 1.5 s + a full second for the silent relay
        assert caught.value.key == "fair.deadline" and caught.value.params["seconds"] == 2
        assert len(flaky.requests) == 4 and len(hole.requests) == 1
        await wait_closed([hole])
        assert hole.open_connections == 0


@contextlib.asynccontextmanager
async def hung_server(
    db: aiosqlite.Connection, data_dir: Path, count: int
) -> AsyncIterator[tuple[RelayPool, list[RelayDouble], Clock, RelayStore]]:
    """A pool whose server GUILD has ``count`` relays that never answer (0.2 s allowance)."""
    holes = [RelayDouble(api_key=KEY_A) for _ in range(count)]
    try:
        clock = Clock()
        relays = await black_holes(db, data_dir, holes, clock)
        async with RelayClient(max_attempts=1, timeout=0.2, url_guard=make_guard(True)) as client:
            yield RelayPool(client, relays, settings(data_dir), clock=clock), holes, clock, relays
    finally:
        for hole in holes:
            hole.close()


async def test_a_server_whose_relays_keep_timing_out_is_rested_then_tried_again(db: aiosqlite.Connection, data_dir: Path) -> None:
    async with hung_server(db, data_dir, 3) as (pool, holes, clock, _):
        with pytest.raises(RelayFailed):
            await pool.generate(GUILD, request())  # two timeouts: the breaker opens
        sent = sum(len(h.requests) for h in holes)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ServerResting) as caught:
            await pool.generate(GUILD, request())
        assert loop.time() - started < 0.1  # at once, without holding a slot
        assert sum(len(h.requests) for h in holes) == sent  # nothing sent
        assert caught.value.key == "fair.server_resting" and caught.value.params["minutes"] == 1
        # Another server is not affected.
        other = RelayStore(db, load_keyring(None, data_dir), allow_private=True, clock=clock)
        with RelayDouble(api_key=KEY_B) as good:
            good.default = Behaviour("image", **SMALL)
            await other.add(GUILD + 1, name="good", base_url=good.url, api_key=KEY_B, dialect="gemini", auth="query")
            _, name = await pool.generate(GUILD + 1, request())
            assert name == "good"
            # After the rest one job is let through; it times out again: twice as long now.
            clock.now += 61
            for h in holes:
                h.default = Behaviour("hang")
            with pytest.raises(RelayFailed) as again:
                await pool.generate(GUILD, request())
            assert not isinstance(again.value, ServerResting)
            with pytest.raises(ServerResting) as longer:
                await pool.generate(GUILD, request())
            assert longer.value.params["minutes"] == 2
            # The admin fixes a relay; after the rest a success closes the breaker.
            clock.now += 121
            for h in holes:
                h.default = Behaviour("image", **SMALL)
            await pool.generate(GUILD, request())
            await pool.generate(GUILD, request())


async def test_an_admins_successful_relay_test_ends_the_servers_rest(db: aiosqlite.Connection, data_dir: Path) -> None:
    async with hung_server(db, data_dir, 2) as (pool, holes, _, _):
        with pytest.raises(RelayFailed):
            await pool.generate(GUILD, request())
        with pytest.raises(ServerResting):
            await pool.generate(GUILD, request())
        for h in holes:
            h.default = Behaviour("image", **SMALL)  # the admin fixed the relay...
        await pool.probe(GUILD, "hole0")  # ...and tested it
        _, name = await pool.generate(GUILD, request())
        assert name == "hole0"
