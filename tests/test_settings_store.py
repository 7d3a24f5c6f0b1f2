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
        load_settings(
            {"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": "https://r.example/?key=sk-secret", "NB_API_KEY": "k"},
            require_token=False,
        )
    assert "without a query" in str(info.value) and "sk-secret" not in str(info.value)


def test_dotenv_fills_but_does_not_override(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nDISCORD_TOKEN='from-file'\nexport NB_DATA_DIR=/tmp/x\nNB_RELAY_URL=https://r.example   # the relay\nNB_API_KEY='k#1'\n"
    )
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
        {
            "NB_ENV_FILE": str(tmp_path / "none"),
            "NB_RELAY_URL": "https://r.example",
            "NB_API_KEY": "k",
            "NB_MODEL_ALIASES": "nano-banana-pro=nano-banana-pro-2k",
        },
        require_token=False,
    )
    assert s.relay is not None and s.relay.model_aliases == {"gemini-3-pro-image-preview": "nano-banana-pro-2k"}
    with pytest.raises(SettingsError, match="unknown model"):
        load_settings(
            {"NB_ENV_FILE": str(tmp_path / "none"), "NB_RELAY_URL": "https://r.example", "NB_API_KEY": "k", "NB_MODEL_ALIASES": "dall-e=x"},
            require_token=False,
        )


# ---------------------------------------------------------------- packaging and start-up checks


def test_shipped_migrations_are_read_as_package_data() -> None:
    found = store.discover()
    assert [v for v, _, _ in found] == sorted(int(p.name[:4]) for p in (Path(__file__).parent.parent / "migrations").glob("*.sql"))
    assert all(path.read_text(encoding="utf-8").strip() for _, _, path in found)


async def test_no_migrations_found_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(store.MigrationError) as info:
        await store.connect(tmp_path / "bot.sqlite3", migrations=tmp_path / "empty")
    assert "no database migrations found" in str(info.value) and "\n" not in str(info.value)


async def test_a_database_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await store.connect(path)
    await db.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')")
    await db.close()
    before = path.read_bytes()
    with pytest.raises(store.MigrationError) as info:
        await store.connect(path)
    assert "newer release" in str(info.value) and "9999" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_bot_run_refuses_a_newer_database_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    con = sqlite3.connect(data / "bot.sqlite3")
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT)")
    con.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 'now')")
    con.commit()
    con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    # Discord on a port nothing listens on: the database is opened before the login, so the
    # refusal must come first (exit 3), not "cannot reach Discord".
    env.update(
        {
            "NB_ENV_FILE": str(tmp_path / "none"),
            "NB_DATA_DIR": str(data),
            "DISCORD_TOKEN": "x",
            "DISCORD_API_BASE": "http://127.0.0.1:9/api/v10",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer release" in lines[0] and "Traceback" not in proc.stderr


def test_dotenv_with_a_byte_order_mark_keeps_its_first_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(
        'DISCORD_TOKEN=from-bom-file\nNB_RELAY_URL="https://r.example"\n# note\nNB_API_KEY=k # trailing\n'.encode("utf-8-sig")
    )
    s = load_settings({"NB_ENV_FILE": str(env_file)})
    assert s.discord_token == "from-bom-file"
    assert s.relay is not None and s.relay.url == "https://r.example" and s.relay.api_key == "k"


def _docker_env_file(text: str) -> dict[str, str]:
    """`docker run --env-file` rules (docker/cli opts/envfile.go): a line is skipped when
    blank or starting with '#'; otherwise split at the first '=', the name left-trimmed and
    free of whitespace, the value taken literally (no quotes removed, no comments cut)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep and not any(ch.isspace() for ch in name), f"docker refuses the line {line!r}"
        out[name] = value
    return out


def test_env_example_means_the_same_to_the_bot_and_to_docker(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / ".env.example"
    text = example.read_text(encoding="utf-8")
    docker = _docker_env_file(text)
    ours: dict[str, str] = {}
    from bot.env import load_dotenv

    load_dotenv(example, ours)
    assert ours == docker and "DISCORD_TOKEN" in docker
    # And each commented-out example line, switched on, reads the same both ways too.
    switched = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# NB_") or line.startswith("# DISCORD_"))
    (tmp_path / "on.env").write_text(switched)
    ours = {}
    load_dotenv(tmp_path / "on.env", ours)
    assert ours == _docker_env_file(switched) and len(ours) > 20


async def test_the_bot_builds_its_relay_client_from_the_retry_settings(tmp_path: Path) -> None:
    """NB_RETRY_ATTEMPTS=2 with no backoff: a relay that keeps answering 503 is asked twice."""
    from bot.relay.types import GenerationRequest, RelayConfig, RelayError
    from bot.services import Services
    from tests.doubles.relay_double import Behaviour, RelayDouble

    settings = load_settings(
        {
            "NB_ENV_FILE": str(tmp_path / "none"),
            "NB_DATA_DIR": str(tmp_path / "data"),
            "NB_RETRY_ATTEMPTS": "2",
            "NB_RETRY_BACKOFF": "0",
            "NB_RETRY_MAX_BACKOFF": "0",
            "NB_RELAY_TIMEOUT": "7.5",
        },
        require_token=False,
    )
    services = await Services.open(settings)
    try:
        client = services.relay_client
        assert (client.max_attempts, client.backoff_base, client.max_backoff, client.timeout) == (2, 0.0, 0.0, 7.5)
        with RelayDouble(api_key="retry-key-1234") as relay:
            relay.default = Behaviour("error", status=503)
            with pytest.raises(RelayError):
                await client.generate(RelayConfig(base_url=relay.url, api_key="retry-key-1234"), GenerationRequest(prompt="a cat"))
            assert len(relay.requests) == 2
    finally:
        await services.close()
