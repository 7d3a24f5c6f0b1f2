"""Redaction that cannot be cut: redact first, then cut; per relay; cheap at any key count."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from bot import store
from bot.relay import redact as R
from bot.relay.client import RelayClient
from bot.relay.types import GenerationRequest, NoImage, RelayConfig, RelayFailed
from bot.relays.store import RelayStore
from bot.secrets import load_keyring
from tests.doubles.relay_double import Behaviour, RelayDouble

KEY = "AIzaSyHostileRedactionKey0123456789xyz"  # 39 characters, like a Google key


def shown_of(key: str, text: str) -> int:
    """The longest piece of ``key`` that appears in ``text``."""
    return max((n for n in range(1, len(key) + 1) for i in range(len(key) - n + 1) if key[i : i + n] in text), default=0)


def test_a_key_straddling_the_cut_is_masked_whole() -> None:
    for before in range(400, 520, 7):
        text = "x" * before + f" key {KEY} more text after it"
        out = R.cut(text, 500, [KEY])
        assert len(out) <= 500
        assert shown_of(KEY, out) < 4, (before, out[-60:])


def test_a_key_the_relay_itself_cut_short_is_masked_at_the_end() -> None:
    out = R.cut("upstream said: invalid key " + KEY[:33], 500, [KEY])
    assert KEY[:8] not in out and out.endswith(R.MASK)


def test_a_short_key_never_blanks_ordinary_words() -> None:
    R.register_secret("picture")
    R.register_secret("picture", operator=True)
    assert R.redact("a picture of a cat") == "a picture of a cat"
    assert R.redact_everywhere("a picture of a cat") == "a picture of a cat"
    assert "picture" not in R.redact("GET /x?key=picture")  # in a key position it is still masked


def test_another_servers_key_is_not_looked_for_in_this_relays_messages_but_is_in_logs() -> None:
    other = "another-servers-stored-key-987654321"
    R.register_secret(other)
    assert R.redact(f"text {other}", [KEY]) == f"text {other}"  # not this relay's key: no cost, no mask
    assert other not in R.redact_everywhere(f"log line {other}")
    assert R.redact(f"this relay's {KEY}", [KEY]) == "this relay's ***"


def test_a_hundred_thousand_stored_keys_cost_nothing_per_redaction() -> None:
    stored = [f"stored-key-{i:08d}-abcdefghij" for i in range(100_000)]
    for key in stored:
        R.register_secret(key)
    text = ("An error came back from the relay with some words in it, " * 8) + "stored-key-00054321-abcdefghij"
    R.redact_everywhere(text)  # the matcher is built once per change of the registry
    started = time.perf_counter()
    for _ in range(100):
        everywhere = R.redact_everywhere(text)
        scoped = R.redact(text, [KEY])
    per_call = (time.perf_counter() - started) / 100
    assert "stored-key-00054321" not in everywhere and "stored-key-00054321" in scoped
    started = time.perf_counter()
    R.register_secret("one-more-stored-key-after-those")  # no rebuild of the 100k
    assert time.perf_counter() - started < 0.005
    for key in stored:
        R.forget_secret(key)
    assert per_call < 0.005, f"{per_call * 1000:.2f} ms per redaction"  # was 129 ms on main


async def test_stored_keys_are_registered_when_stored_and_forgotten_on_edit_and_remove(data_dir: Path) -> None:
    first, second = "first-stored-relay-key-abcdef123", "second-stored-relay-key-xyz98765"
    db = await store.connect(data_dir / "bot.sqlite3")
    try:
        relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True)
        await relays.add(1, name="main", base_url="http://127.0.0.1:9", api_key=first, dialect="gemini", auth="query")
        assert first not in R.redact_everywhere(f"log {first}")
        await relays.edit(1, "main", api_key=second)
        assert first in R.redact_everywhere(f"log {first}")  # replaced: forgotten
        assert second not in R.redact_everywhere(f"log {second}")
        await relays.remove(1, "main")
        assert second in R.redact_everywhere(f"log {second}")
    finally:
        await db.close()


@pytest.fixture
def double():
    with RelayDouble(api_key=KEY) as relay:
        yield relay


def _relay(double: RelayDouble) -> RelayConfig:
    return RelayConfig(base_url=double.url, dialect="gemini", auth="query", api_key=KEY, name="r")


async def test_a_key_echoed_after_450_characters_of_error_text_is_not_shown(double: RelayDouble) -> None:
    # Found on main: up to 33 of the key's 39 characters shown (cut before redacted).
    double.enqueue(Behaviour("hostile", attack="key_echo"))
    async with RelayClient(max_attempts=1) as client:
        with pytest.raises(RelayFailed) as caught:
            await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
    error = caught.value
    for text in (str(error), error.relay_message, *map(str, error.params.values())):
        assert shown_of(KEY, text) < 4, text


async def test_the_key_in_a_successful_answers_text_is_masked_and_the_text_capped(
    double: RelayDouble, caplog: pytest.LogCaptureFixture
) -> None:
    double.enqueue(Behaviour("hostile", attack="key_in_text"), Behaviour("text_only", text="words " * 5000))
    async with RelayClient(max_attempts=1) as client:
        with caplog.at_level(logging.DEBUG):
            result = await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
            with pytest.raises(NoImage) as caught:
                await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
    assert result.image and KEY not in result.text and shown_of(KEY, result.text) < 4
    assert "***" in result.text
    assert len(caught.value.model_text) <= 1000 and len(str(caught.value)) < 1400
    assert KEY not in caplog.text
