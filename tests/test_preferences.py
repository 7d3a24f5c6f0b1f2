"""Personal settings: stored per member and server in a real SQLite file, and merged under the
server's defaults and limits — what the server allows wins, stale values fall back."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import store
from bot.guild_config import GuildSettings
from bot.i18n import t
from bot.preferences import PreferenceError, Preferences, PreferenceStore, ServerCreative, effective

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
OLD = "gemini-2.5-flash-image"
GUILD, MEMBER = 10, 20


@pytest.fixture
async def prefs(tmp_path: Path):
    db = await store.connect(tmp_path / "bot.sqlite3")
    try:
        yield PreferenceStore(db)
    finally:
        await db.close()


async def test_a_setting_survives_a_restart_and_stays_in_its_server(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await store.connect(path)
    await PreferenceStore(db).set(GUILD, MEMBER, "aspect_ratio", "16x9")
    await PreferenceStore(db).set(GUILD, MEMBER, "private", True)
    await db.close()
    db = await store.connect(path)
    try:
        again = PreferenceStore(db)
        assert await again.get(GUILD, MEMBER) == Preferences(aspect_ratio="16:9", private=True)
        assert await again.get(GUILD + 1, MEMBER) == Preferences()  # another server: its own
        assert await again.get(None, MEMBER) == Preferences()  # direct messages: their own
    finally:
        await db.close()


async def test_variants_over_the_servers_maximum_are_capped_and_the_member_is_told(prefs: PreferenceStore) -> None:
    await prefs.set(GUILD, MEMBER, "variants", 4)
    await prefs.save_server(GUILD, ServerCreative(variants_default=1, variants_max=2))
    got = await prefs.effective(GUILD, MEMBER, GuildSettings())
    assert got.variants == 2
    assert got.dropped == ("variants",)
    assert "at most 2 variants" in t("prefs.dropped.variants", "en", maximum=2)


async def test_a_size_over_the_servers_largest_is_capped_to_it(prefs: PreferenceStore) -> None:
    await prefs.set(GUILD, MEMBER, "size", "4k")
    await prefs.save_server(GUILD, ServerCreative(max_size="2K"))
    got = await prefs.effective(GUILD, MEMBER, GuildSettings(default_model=FLASH, default_size="1K"))
    assert (got.size, got.dropped) == ("2K", ("size",))


async def test_a_model_the_server_no_longer_allows_falls_back_to_the_servers_default(prefs: PreferenceStore) -> None:
    await prefs.set(GUILD, MEMBER, "model", PRO)
    await prefs.set(GUILD, MEMBER, "aspect_ratio", "21:9")
    server = GuildSettings(default_model=FLASH, allowed_models=(FLASH, OLD))
    got = await prefs.effective(GUILD, MEMBER, server)
    assert got.model == FLASH
    assert got.aspect_ratio == "21:9"  # still valid for the fallback model: kept
    assert got.dropped == ("model",)


def test_a_ratio_or_size_the_chosen_model_lacks_falls_back_instead_of_failing() -> None:
    # 2.5 Flash has a fixed size and no 1:8; the server's own defaults are used where they fit.
    server = GuildSettings(default_model=OLD, default_ratio="4:3")
    got = effective(Preferences(model=OLD, aspect_ratio="1:8", size="4K"), server, ServerCreative())
    assert (got.model, got.aspect_ratio, got.size) == (OLD, "4:3", None)
    assert set(got.dropped) == {"aspect_ratio", "size"}


def test_without_preferences_the_servers_defaults_apply_unchanged() -> None:
    server = GuildSettings(default_model=PRO, default_ratio="3:2", default_size="2K")
    got = effective(Preferences(), server, ServerCreative(variants_default=3, variants_max=4))
    assert (got.model, got.aspect_ratio, got.size, got.variants, got.private, got.dropped) == (PRO, "3:2", "2K", 3, False, ())


async def test_garbage_stored_by_an_older_release_falls_back_and_never_crashes(prefs: PreferenceStore) -> None:
    rows = [
        (GUILD, MEMBER, '{"model": 7, "variants": "four", "private": "yes", "locale": "fr", "size": "huge"}'),
        (GUILD, MEMBER + 1, "not json"),
        (GUILD, MEMBER + 2, "[1, 2]"),
    ]
    for guild, user, data in rows:
        await store.write(prefs.db, "INSERT INTO member_preferences VALUES (?, ?, ?, 0)", (guild, user, data))
    await store.write(prefs.db, "INSERT INTO guild_creative VALUES (?, ?, 0)", (GUILD, '{"variants_max": 99, "variants_default": 0}'))
    assert await prefs.server(GUILD) == ServerCreative(variants_default=1, variants_max=4)
    for _, user, _ in rows:
        got = await prefs.effective(GUILD, user, GuildSettings())
        assert got.model == GuildSettings().default_model
        assert got.variants == 1 and got.private is False
    first = await prefs.effective(GUILD, MEMBER, GuildSettings())
    assert set(first.dropped) == {"size", "locale"}  # kept strings that no longer fit, told


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("variants", 5, "prefs.bad_variants"),
        ("variants", "0", "prefs.bad_variants"),
        ("model", "dall-e", "prefs.bad_model"),
        ("aspect_ratio", "wide", "prefs.bad_ratio"),
        ("size", "8K", "prefs.bad_size"),
        ("locale", "fr", "prefs.bad_locale"),
        ("colour", "red", "prefs.unknown"),
    ],
)
async def test_a_bad_choice_is_refused_with_a_translated_reason_and_nothing_is_stored(
    prefs: PreferenceStore, name: str, value: object, key: str
) -> None:
    await prefs.set(GUILD, MEMBER, "variants", 2)
    with pytest.raises(PreferenceError) as caught:
        await prefs.set(GUILD, MEMBER, name, value)  # type: ignore[arg-type]
    assert caught.value.key == key
    for locale in ("en", "zh-CN"):
        assert t(key, locale, **caught.value.params) != key
    assert await prefs.get(GUILD, MEMBER) == Preferences(variants=2)


async def test_clearing_a_setting_and_reset_give_the_servers_default_back(prefs: PreferenceStore) -> None:
    await prefs.set(GUILD, MEMBER, "model", PRO)
    await prefs.set(GUILD, MEMBER, "size", "2K")
    await prefs.set(GUILD, MEMBER, "model", None)
    assert await prefs.get(GUILD, MEMBER) == Preferences(size="2K")
    await prefs.reset(GUILD, MEMBER)
    assert await prefs.get(GUILD, MEMBER) == Preferences()


async def test_an_admin_cannot_set_a_default_above_the_maximum(prefs: PreferenceStore) -> None:
    with pytest.raises(PreferenceError) as caught:
        await prefs.save_server(GUILD, ServerCreative(variants_default=3, variants_max=2))
    assert caught.value.key == "prefs.bad_server_variants"
    assert await prefs.server(GUILD) == ServerCreative()


async def test_imagine_reads_preferences_and_limits_at_once_on_the_read_only_connection(tmp_path: Path) -> None:
    """What /imagine reads before its acknowledgement (PreferenceStore.for_request) comes from
    the read-only connection, and sees a change the moment it is saved."""
    path = tmp_path / "bot.sqlite3"
    db = await store.connect(path)
    reader = await store.connect_reader(path)
    assert reader is not None
    try:
        prefs = PreferenceStore(db, reader=reader)
        assert await prefs.for_request(GUILD, MEMBER) == (Preferences(), ServerCreative())
        await prefs.set(GUILD, MEMBER, "variants", 3)
        await prefs.set(GUILD, MEMBER, "private", True)
        await prefs.save_server(GUILD, ServerCreative(variants_default=2, variants_max=3, max_size="2K"))
        mine, creative = await prefs.for_request(GUILD, MEMBER)
        assert mine == Preferences(variants=3, private=True)
        assert creative == ServerCreative(variants_default=2, variants_max=3, max_size="2K")
        # direct messages: the member's own DM settings, and no server limits
        assert await prefs.for_request(None, MEMBER) == (Preferences(), ServerCreative())
        await prefs.reset(GUILD, MEMBER)
        assert (await prefs.for_request(GUILD, MEMBER))[0] == Preferences()
    finally:
        await reader.close()
        await db.close()
