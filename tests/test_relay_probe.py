"""Relays that set themselves up: bot/relay/probe.py against one double per seed relay style.

Each double (tests/doubles/relay_double.SeedRelayDouble) serves only what that relay's docs
describe (routes, one auth style, its model names); the probe gets nothing but the URL and key.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot import store
from bot.guild_config import ConfigError
from bot.i18n import t
from bot.relay.client import RelayClient
from bot.relay.model_names import map_models
from bot.relay.probe import probe_relay
from bot.relay.probe_result import OUTCOME_KEYS
from bot.relay.types import GenerationRequest
from bot.relays.store import RelayStore
from bot.secrets import load_keyring
from bot.urlguard import make_guard
from tests.doubles.relay_double import SeedRelayDouble

KEY = "sk-probe-secret-0123456789abcdef"
GUILD = 4242


@pytest.fixture
async def client() -> AsyncIterator[RelayClient]:
    # The doubles live on 127.0.0.1, which the operator allows as NB_ALLOW_PRIVATE_RELAYS=1 does.
    c = RelayClient(max_attempts=3, backoff_base=0.01, url_guard=make_guard(True))
    yield c
    await c.aclose()


@pytest.fixture
async def relays(data_dir: Path) -> AsyncIterator[RelayStore]:
    conn: aiosqlite.Connection = await store.connect(data_dir / "bot.sqlite3")
    yield RelayStore(conn, load_keyring(None, data_dir), allow_private=True)
    await conn.close()


def double(style: str, **kw: object) -> SeedRelayDouble:
    return SeedRelayDouble(style, api_key=KEY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "style, dialect, auth, aliases",
    [
        ("gemini-query", "gemini", "query", {}),
        ("gemini-bearer", "gemini", "bearer", {}),
        ("gemini-goog", "gemini", "x-goog-api-key", {}),
        ("openai-images", "openai-images", "bearer", {}),  # lists gemini-* ids too: no alias needed
        ("openai-chat", "openai-chat", "bearer", {}),
    ],
)
async def test_each_seed_style_is_detected_from_url_and_key_alone(
    client: RelayClient, style: str, dialect: str, auth: str, aliases: dict[str, str]
) -> None:
    with double(style) as relay:
        result = await probe_relay(client, relay.url, KEY)
        assert result.found, result.summary()
        assert (result.dialect, result.auth, dict(result.models.aliases)) == (dialect, auth, aliases)
        assert result.auth_confirmed and not result.generated
        assert result.models.served  # the catalogue models it lists
        assert not any(
            r.path.endswith((":generateContent", "/generations", "/completions"))
            and r.json
            and ("prompt" in r.json or "messages" in r.json or "contents" in r.json)
            for r in relay.requests
        )
        # The stored config really works: one generation through it succeeds.
        config = result.relay_config(KEY, trusted=False)
        picture = await client.generate(config, GenerationRequest(prompt="a cat", model=result.models.served[0]))
        assert picture.width > 0


async def test_images_style_maps_per_size_names_when_only_aliases_are_listed(client: RelayClient) -> None:
    names = ["nano-banana", "nano-banana-pro", "nano-banana-pro-2k", "nano-banana-pro-4k", "gpt-4o"]
    models = map_models(names)
    assert dict(models.aliases) == {"gemini-2.5-flash-image": "nano-banana", "gemini-3-pro-image-preview": "nano-banana-pro"}
    assert models.sized == {"gemini-3-pro-image-preview": {"2K": "nano-banana-pro-2k", "4K": "nano-banana-pro-4k"}}
    only_sized = map_models(["models/nano-banana-pro-4k", "google/nano-banana-pro-2k"])
    assert dict(only_sized.aliases) == {"gemini-3-pro-image-preview": "nano-banana-pro-2k"}
    assert map_models(["models/gemini-3.1-flash-image-preview"]).served == ("gemini-3.1-flash-image-preview",)


async def test_a_pasted_endpoint_url_is_cut_back_to_the_base_and_its_key_never_shown(client: RelayClient) -> None:
    with double("gemini-query") as relay:
        pasted = f"{relay.url}/v1beta/models/gemini-3-pro-image-preview:generateContent?key={KEY}"
        result = await probe_relay(client, pasted, KEY)
        # relay_base_url (the operator relay's normalisation) keeps the version segment.
        assert result.found and result.base_url == relay.url + "/v1beta" and result.auth == "query"
        assert any(d.code == "pasted_endpoint" for d in result.decisions)
        assert KEY not in repr(result) and KEY[3:] not in repr(result)


async def test_nothing_useful_says_choose_the_format_and_stores_nothing(client: RelayClient, relays: RelayStore) -> None:
    with double("useless") as relay:
        result = await probe_relay(client, relay.url, KEY, allow_generation=True)
        assert not result.found and result.outcome == "nothing_useful"
        assert "choose the format" in result.summary()
        assert all(not e.ok for e in result.evidence) and len(result.evidence) == 4  # 3 Gemini auth styles + /v1/models
        assert all(r.method == "GET" for r in relay.requests)  # no generation was tried
        with pytest.raises(ConfigError) as caught:
            await relays.add_probed(GUILD, "mine", result, KEY)
        assert caught.value.key == "probe.outcome.not_found"
        assert await relays.list(GUILD) == []
        for locale in ("en", "zh-CN"):
            assert t(caught.value.key, locale) != caught.value.key


async def test_a_found_relay_is_stored_with_what_was_found(client: RelayClient, relays: RelayStore) -> None:
    with double("gemini-bearer") as relay:
        result = await probe_relay(client, relay.url, KEY)
        info = await relays.add_probed(GUILD, "mine", result, KEY)
    assert (info.name, info.dialect, info.auth) == ("mine", "gemini", "bearer")
    assert [r.name for r in await relays.list(GUILD)] == ["mine"]


async def test_the_probe_never_leaks_the_key_even_when_the_relay_echoes_it(client: RelayClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with double("gemini-query", echo_key=True) as relay:  # the Bearer and x-goog-api-key tries echo the key
        result = await probe_relay(client, relay.url, KEY)
        echoed = [r for r in relay.requests if r.auth_style in ("bearer", "x-goog-api-key")]
    assert result.found and result.auth == "query"
    assert echoed, "the double should have been asked with the styles it refuses"
    with double("openai-chat", echo_key=True) as relay:
        wrong = await probe_relay(client, relay.url, "sk-wrong-key-abcdefghijklmnop")
    assert wrong.outcome == "key_refused"
    texts = [repr(result), result.summary(), repr(wrong), wrong.summary(), caplog.text]
    for text in texts:
        for secret in (KEY, KEY[3:], "sk-wrong-key-abcdefghijklmnop", "wrong-key-abcdefghijklmnop"):
            assert secret not in text
    assert "***" in " ".join(e.detail for e in wrong.evidence)  # the echo was there, masked


async def test_url_guard_refuses_a_private_address_unless_allowed() -> None:
    with double("gemini-query") as relay:
        async with RelayClient(max_attempts=1, url_guard=make_guard(False)) as strict:
            refused = await probe_relay(strict, relay.url, KEY)
        assert refused.outcome == "url_refused" and not refused.found
        assert relay.requests == []  # nothing reached the relay
        async with RelayClient(max_attempts=1, url_guard=make_guard(True)) as lenient:
            allowed = await probe_relay(lenient, relay.url, KEY)
        assert allowed.found and allowed.dialect == "gemini"
        # The operator's own relay is trusted: no guard even on a strict client.
        async with RelayClient(max_attempts=1, url_guard=make_guard(False)) as strict:
            trusted = await probe_relay(strict, relay.url, KEY, trusted=True)
        assert trusted.found


async def test_open_model_list_leaves_auth_unconfirmed_until_one_tiny_generation(client: RelayClient) -> None:
    with double("gemini-bearer", open_models=True) as relay:
        cheap = await probe_relay(client, relay.url, KEY)
        assert cheap.found and not cheap.auth_confirmed and not cheap.generated
        assert any(d.code == "unconfirmed" for d in cheap.decisions)
        before = len(relay.requests)
        confirmed = await probe_relay(client, relay.url, KEY, allow_generation=True)
        generations = [r for r in relay.requests[before:] if r.path.endswith(":generateContent")]
    assert confirmed.found and confirmed.auth_confirmed and confirmed.generated
    assert len(generations) == 1  # at most one tiny generation
    assert generations[0].model == "gemini-3.1-flash-image-preview"  # the cheapest listed


async def test_unreachable_relay_is_reported(client: RelayClient) -> None:
    relay = double("gemini-query")
    url = relay.url
    relay.close()  # nothing listens there any more
    result = await probe_relay(client, url, KEY, step_timeout=5)
    assert result.outcome == "unreachable" and len(result.evidence) == 1


async def test_bad_urls_are_refused_before_any_call(client: RelayClient) -> None:
    for url in ("", "ftp://example.com", "not a url"):
        result = await probe_relay(client, url, KEY)
        assert result.outcome == "bad_url" and result.evidence == ()


def test_every_outcome_has_a_verdict_in_both_languages() -> None:
    for key in OUTCOME_KEYS.values():
        for locale in ("en", "zh-CN"):
            assert t(key, locale, dialect="gemini", auth="bearer", candidates="a, b") != key


async def test_both_openai_routes_with_plain_names_stay_ambiguous_unless_one_generation_decides(client: RelayClient) -> None:
    from tests.doubles.relay_double import SeedStyle

    gateway = SeedStyle(frozenset({"images", "chat", "openai-models"}), "bearer", ("gemini-2.5-flash-image",))
    with SeedRelayDouble(None, api_key=KEY) as relay:
        relay.style = gateway  # a new-api style gateway: both routes, Google's names
        result = await probe_relay(client, relay.url, KEY)
        assert result.outcome == "ambiguous" and not result.found
        assert result.candidates == ("openai-images", "openai-chat")
        assert "choose the format" in result.summary()
        empty_posts = [r for r in relay.requests if r.method == "POST"]
        assert len(empty_posts) == 2 and all("prompt" not in (r.json or {}) and "messages" not in (r.json or {}) for r in empty_posts)
        decided = await probe_relay(client, relay.url, KEY, allow_generation=True)
    assert decided.found and decided.dialect == "openai-images" and decided.generated


async def test_every_answer_is_bounded_in_size_and_time(client: RelayClient) -> None:
    import time

    from bot.relay.client import SMALL_ANSWER_BYTES
    from tests.doubles.relay_double import Behaviour, RelayDouble

    with RelayDouble(api_key=KEY) as relay:
        huge = b'{"models": [' + b'{"name": "models/x"},' * (SMALL_ANSWER_BYTES // 20) + b'{"name": "models/gemini-2.5-flash-image"}]}'
        relay.enqueue(Behaviour("raw", body=huge))  # the first list is over the cap
        result = await probe_relay(client, relay.url, KEY)
        # Refused by whichever bound the client meets first: the small-answer byte cap or the
        # decoder's budget of JSON values (an answer this long holds ~100k of them).
        detail = result.evidence[0].detail
        assert result.evidence[0].ok is False and ("exceeded 2 MB" in detail or "answer was refused" in detail)
        assert result.found and result.auth == "x-goog-api-key"  # the next style's list was normal
        relay.reset()
        relay.default = Behaviour("hang")
        started = time.monotonic()
        stuck = await probe_relay(client, relay.url, KEY, step_timeout=1.0)
        elapsed = time.monotonic() - started
    assert stuck.outcome == "unreachable" and elapsed < 5.0


async def test_every_decision_reads_in_both_languages(client: RelayClient) -> None:
    seen: set[str] = set()
    for style in ("gemini-query", "openai-images", "openai-chat", "useless"):
        with double(style) as relay:
            result = await probe_relay(client, relay.url, KEY)
        for decision in result.decisions:
            seen.add(decision.key)
            for locale in ("en", "zh-CN"):
                line = t(decision.key, locale, **decision.params)
                assert line != decision.key and "{" not in line
    assert {"probe.why.gemini_list", "probe.why.size_names", "probe.why.only_chat_route", "probe.why.no_model_list"} <= seen


async def test_a_pasted_images_endpoint_settles_images_vs_chat_on_a_gateway(client: RelayClient) -> None:
    from tests.doubles.relay_double import SeedStyle

    with SeedRelayDouble(None, api_key=KEY) as relay:
        relay.style = SeedStyle(frozenset({"images", "chat", "openai-models"}), "bearer", ("gemini-2.5-flash-image",))
        result = await probe_relay(client, f"{relay.url}/v1/images/generations", KEY)
        assert result.found and result.dialect == "openai-images" and result.base_url == relay.url + "/v1"
        assert not [r for r in relay.requests if r.method == "POST"]  # no route check needed
        chat = await probe_relay(client, f"{relay.url}/v1/chat/completions", KEY)
    assert chat.found and chat.dialect == "openai-chat"
