"""Balance queries (bot/relay/balance.py) against a relay double with new-api's balance routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.relay.balance import Balance, BalanceChange, read_balance
from bot.relay.client import RelayClient
from bot.relay.types import RelayConfig
from bot.relays.balances import BalanceChecker
from bot.relays.store import RelayStore
from bot.secrets import load_keyring
from bot.urlguard import make_guard
from tests import pg
from tests.doubles.relay_double import QUOTA_PER_USD, SeedRelayDouble

backend, db_target, pg_server, open_db = pg.backend, pg.db_target, pg.pg_server, pg.open_db

KEY = "sk-balance-secret-abcdef0123456789"


@pytest.fixture
async def client() -> AsyncIterator[RelayClient]:
    c = RelayClient(max_attempts=3, backoff_base=0.01, url_guard=make_guard(True))
    yield c
    await c.aclose()


def config(relay: SeedRelayDouble, *, key: str = KEY, dialect: str = "openai-images") -> RelayConfig:
    return RelayConfig(base_url=relay.url, dialect=dialect, auth="bearer", api_key=key, name="gw", trusted=False)  # type: ignore[arg-type]


async def test_balance_is_read_and_goes_to_zero(client: RelayClient) -> None:
    with SeedRelayDouble("openai-images", api_key=KEY) as relay:
        relay.set_balance(12.5, used=7.5)
        first = await read_balance(client, config(relay))
        assert first == Balance(remaining=12.5, unit="USD", source="billing", used=7.5, total=20.0)
        assert not first.empty and first.below(20) and not first.below(5)
        relay.set_balance(0.0, used=20.0)
        drained = await read_balance(client, config(relay))
        assert drained is not None and drained.remaining == 0.0 and drained.empty
        paths = [r.path for r in relay.requests]
    assert paths.count("/v1/dashboard/billing/subscription") == 2 and paths.count("/v1/dashboard/billing/usage") == 2


async def test_token_usage_endpoint_when_billing_is_absent(client: RelayClient) -> None:
    with SeedRelayDouble("openai-chat", api_key=KEY) as relay:
        relay.set_balance(2.0, used=1.0, billing=False)
        found = await read_balance(client, config(relay, dialect="gemini"))  # any dialect: Bearer, /v1
        assert found == Balance(
            remaining=2.0 * QUOTA_PER_USD, unit="quota", source="token_usage", used=1.0 * QUOTA_PER_USD, total=3.0 * QUOTA_PER_USD
        )
        relay.set_balance(0.0, used=3.0, billing=False)
        versioned = RelayConfig(base_url=relay.url + "/v1", dialect="openai-chat", auth="bearer", api_key=KEY, trusted=False)
        empty = await read_balance(client, versioned)  # token info lives at the root, not under /v1
        assert empty is not None and empty.empty
        assert any(r.path == "/api/usage/token" for r in relay.requests)


async def test_unlimited_key_is_never_empty(client: RelayClient) -> None:
    with SeedRelayDouble("openai-images", api_key=KEY) as relay:
        relay.set_balance(0.0, unlimited=True)
        found = await read_balance(client, config(relay))
    assert found is not None and found.unlimited and not found.empty and not found.below(1e9)


async def test_a_relay_without_a_balance_endpoint_gives_none(client: RelayClient) -> None:
    with SeedRelayDouble("gemini-bearer", api_key=KEY) as relay:
        assert await read_balance(client, config(relay, dialect="gemini")) is None
    with SeedRelayDouble("useless", api_key=KEY) as relay:
        assert await read_balance(client, config(relay)) is None


async def test_balance_check_is_key_safe_and_obeys_the_url_guard(client: RelayClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-not-the-key-zyxwvutsrqponmlk"
    with SeedRelayDouble("openai-images", api_key=KEY, echo_key=True) as relay:
        relay.set_balance(5.0)
        assert await read_balance(client, config(relay, key=wrong)) is None  # refused, echoing the key
        assert relay.requests, "the double was asked"
        async with RelayClient(max_attempts=1, url_guard=make_guard(False)) as strict:
            before = len(relay.requests)
            assert await read_balance(strict, config(relay)) is None
            assert len(relay.requests) == before  # the guard refused before sending
    assert wrong not in caplog.text and wrong[3:] not in caplog.text and KEY not in caplog.text
    assert "***" in caplog.text


async def test_a_relay_going_to_zero_is_warned_about_once_then_skipped_until_topped_up(client: RelayClient) -> None:
    from bot.relay.balance import BalanceWatch

    watch = BalanceWatch()
    with SeedRelayDouble("openai-images", api_key=KEY) as relay:
        relay_id = "4242:gw"

        async def check() -> object:
            return watch.update(relay_id, await read_balance(client, config(relay)), warn_below=5.0)

        relay.set_balance(20.0)
        assert await check() is None and not watch.out_of_credit(relay_id)
        relay.set_balance(3.0, used=17.0)
        low = await check()
        assert low is not None and low.warn and (low.before, low.after) == ("ok", "low")
        assert await check() is None  # still low: no second warning
        relay.set_balance(0.0, used=20.0)
        empty = await check()
        assert empty is not None and empty.warn and empty.after == "empty"
        assert watch.out_of_credit(relay_id)  # failover skips it now
        assert await check() is None and watch.out_of_credit(relay_id)
        relay.set_balance(50.0, used=20.0)
        back = await check()
        assert back is not None and back.recovered and not back.warn and not watch.out_of_credit(relay_id)


async def test_balance_levels_are_shared_by_every_process_and_survive_a_restart(
    client: RelayClient, open_db: Callable[[], object], data_dir: Path
) -> None:
    """Two processes on one database (SQLite file or PostgreSQL): the one that checks records the
    level; the other skips the empty relay after reading it back; a restarted checker does not
    warn a second time about the same drop; removing the relay forgets its level."""
    ring = load_keyring(None, data_dir)
    checking = BalanceChecker(client, RelayStore(await open_db(), ring, allow_private=True))  # type: ignore[arg-type]
    other = BalanceChecker(client, RelayStore(await open_db(), ring, allow_private=True))  # type: ignore[arg-type]
    with SeedRelayDouble("openai-images", api_key=KEY) as relay:
        info = await checking.store.add(4242, name="gw", base_url=relay.url, api_key=KEY, dialect="openai-images", auth="bearer")
        relay.set_balance(0.0, used=20.0)
        [change] = await checking.check(4242, warn_below=5.0)
        assert change.warn and change.after == "empty"
        assert not other.out_of_credit(4242, info.id)  # not read yet
        await other.load()
        assert other.out_of_credit(4242, info.id)  # failover in the other process skips it too

        restarted = BalanceChecker(client, RelayStore(await open_db(), ring, allow_private=True))  # type: ignore[arg-type]
        await restarted.load()
        assert await restarted.check(4242, warn_below=5.0) == []  # still empty: told once already
        relay.set_balance(50.0, used=20.0)
        [back] = await restarted.check(4242, warn_below=5.0)
        assert back.recovered
        await other.load()
        assert not other.out_of_credit(4242, info.id)

        assert await checking.store.remove(4242, "gw")
        await other.load()
        assert other.watch.levels == {}


async def test_two_processes_scheduling_checks_on_postgresql_warn_once(client: RelayClient, pg_server: pg.PgServer, data_dir: Path) -> None:
    """Several gateways each run the schedule; the duty lock and the shared levels make one
    warning per drop, whichever process got there first."""
    import asyncio

    from bot import store

    target = await pg_server.fresh_database()
    ring = load_keyring(None, data_dir)
    dbs = [await store.connect(target) for _ in range(2)]
    checkers = [BalanceChecker(client, RelayStore(db, ring, allow_private=True)) for db in dbs]
    told: list[str] = []

    async def warn_below(guild_id: int) -> float | None:
        return 5.0

    async def tell(guild_id: int, changes: list[BalanceChange]) -> None:
        told.extend(f"{c.relay}:{c.after}" for c in changes)

    try:
        with SeedRelayDouble("openai-images", api_key=KEY) as relay:
            await checkers[0].store.add(7, name="gw", base_url=relay.url, api_key=KEY, dialect="openai-images", auth="bearer")
            relay.set_balance(0.0, used=20.0)
            for c in checkers:
                c.every = c.refresh = 0.1
                c.start(warn_below, tell)
            await asyncio.sleep(1.5)  # about 15 rounds in each process
            assert told == ["gw:empty"]
            relay.set_balance(50.0, used=20.0)
            await asyncio.sleep(1.0)
            assert told == ["gw:empty", "gw:ok"]
            assert all(not c.out_of_credit(7, 1) for c in checkers)
    finally:
        for c in checkers:
            await c.stop()
        for db in dbs:
            await db.close()
