from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot import store
from bot.settings import SettingsError, load_settings


def test_defaults_and_relay_from_env(tmp_path: Path) -> None:
    s = load_settings(
        {
            "DISCORD_TOKEN": "t",
            "NB_RELAY_URL": "https://relay.example/",
            "NB_RELAY_FORMAT": "openai-chat",
            "NB_API_KEY": "sk-secret",
            "NB_ENV_FILE": str(tmp_path / "none"),
        }
    )
    assert s.data_dir == Path("./data")
    assert s.relay is not None and s.relay.url == "https://relay.example"
    assert s.relay.auth == "bearer"  # OpenAI dialects default to a Bearer header
    assert "sk-secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "DISCORD_TOKEN is not set"),
        ({"DISCORD_TOKEN": "t", "NB_RELAY_URL": "https://r", "NB_RELAY_FORMAT": "grpc", "NB_API_KEY": "k"}, "NB_RELAY_FORMAT='grpc'"),
        ({"DISCORD_TOKEN": "t", "NB_RELAY_URL": "https://r", "NB_RELAY_AUTH": "cookie", "NB_API_KEY": "k"}, "NB_RELAY_AUTH='cookie'"),
        ({"DISCORD_TOKEN": "t", "NB_RELAY_URL": "https://r"}, "NB_API_KEY is not set"),
        ({"DISCORD_TOKEN": "t", "NB_RELAY_URL": "ftp://r", "NB_API_KEY": "k"}, "NB_RELAY_URL must be an http(s) URL"),
        ({"DISCORD_TOKEN": "t", "NB_MAX_JOBS": "many"}, "NB_MAX_JOBS='many' is not a whole number"),
    ],
)
def test_bad_settings_explain_themselves_in_one_line(env: dict[str, str], fragment: str, tmp_path: Path) -> None:
    env = {"NB_ENV_FILE": str(tmp_path / "none"), **env}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("pasted", "base"),
    [
        ("https://api.example/v1/chat/completions", "https://api.example/v1"),
        ("https://api.example/v1/images/generations/", "https://api.example/v1"),
        ("https://cdn.example/v1beta/models/gemini-3-pro-image-preview:generateContent", "https://cdn.example/v1beta"),
        ("https://cdn.example", "https://cdn.example"),
    ],
)
def test_a_pasted_endpoint_becomes_the_relays_base_url(pasted: str, base: str, tmp_path: Path) -> None:
    s = load_settings({"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": pasted, "NB_API_KEY": "k"}, require_token=False)
    assert s.relay is not None and s.relay.url == base


def test_a_relay_url_with_a_query_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": "https://r.example/?key=sk-secret", "NB_API_KEY": "k"}, require_token=False)
    assert "without a query" in str(info.value) and "sk-secret" not in str(info.value)


def test_dotenv_fills_but_does_not_override(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nDISCORD_TOKEN='from-file'\nexport NB_DATA_DIR=/tmp/x\nNB_RELAY_URL=https://r.example   # the relay\nNB_API_KEY='k#1'\n")
    s = load_settings({"NB_ENV_FILE": str(env_file), "NB_DATA_DIR": "/srv/data"})
    assert s.discord_token == "from-file"
    assert s.data_dir == Path("/srv/data")
    assert s.relay is not None and s.relay.url == "https://r.example" and s.relay.api_key == "k#1"


async def test_migrations_apply_once_and_use_wal(tmp_path: Path) -> None:
    path = tmp_path / "db" / "bot.sqlite3"
    db = await store.connect(path)
    async with db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"
    async with db.execute("SELECT version FROM schema_migrations") as cur:
        versions = [r[0] for r in await cur.fetchall()]
    assert versions == [v for v, _, _ in store.discover()]
    assert await store.migrate(db) == []  # nothing runs twice
    await db.close()


async def test_failed_migration_leaves_database_as_it_was(tmp_path: Path) -> None:
    mig = tmp_path / "migrations"
    mig.mkdir()
    (mig / "0001_ok.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (mig / "0002_bad.sql").write_text("CREATE TABLE b (y INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    path = tmp_path / "bot.sqlite3"
    with pytest.raises(store.MigrationError) as info:
        await store.connect(path, migrations=mig)
    assert "0002_bad.sql" in str(info.value) and "rolled back" in str(info.value)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables
    assert [r[0] for r in con.execute("SELECT version FROM schema_migrations")] == [1]
    con.close()


def test_model_aliases_reach_the_operator_relay(tmp_path: Path) -> None:
    s = load_settings(
        {"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": "https://r.example", "NB_API_KEY": "k", "NB_MODEL_ALIASES": "nano-banana-pro=nano-banana-pro-2k"},
        require_token=False,
    )
    assert s.relay is not None and s.relay.model_aliases == {"gemini-3-pro-image-preview": "nano-banana-pro-2k"}
    with pytest.raises(SettingsError, match="unknown model"):
        load_settings({"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": "https://r.example", "NB_API_KEY": "k", "NB_MODEL_ALIASES": "dall-e=x"}, require_token=False)
