"""``python -m bot run`` as an operator meets it: bad configuration is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    clean.update({"NB_ENV_FILE": str(tmp_path / "absent.env"), "NB_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def test_no_token_is_one_clear_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    proc = run_bot(tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"NB_RELAY_URL": "https://relay.example", "NB_RELAY_FORMAT": "soap", "NB_API_KEY": "k"}, "NB_RELAY_FORMAT"),
        ({"NB_MAX_JOBS": "-3"}, "NB_MAX_JOBS"),
        ({"DISCORD_API_BASE": "not a url"}, "DISCORD_API_BASE"),
    ],
)
def test_malformed_settings_are_one_line(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    proc = run_bot(tmp_path, DISCORD_TOKEN="x", **env)
    assert proc.returncode == 2
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_usage_without_a_subcommand(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "python -m bot run" in proc.stderr


def test_unreachable_discord_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    proc = run_bot(tmp_path, DISCORD_TOKEN="x", DISCORD_API_BASE="http://127.0.0.1:9/api/v10")
    assert proc.returncode == 4
    assert "cannot reach Discord" in proc.stderr and "Traceback" not in proc.stderr


async def test_python_m_bot_run_serves_imagine_through_discord_api_base(tmp_path: Path) -> None:
    """The real entry point, unmodified, as an operator starts it: only the environment points
    it at the Discord double (DISCORD_API_BASE; the gateway URL comes from that API)."""
    from tests.doubles.discord_double import DiscordDouble
    from tests.doubles.relay_double import RelayDouble
    from tests.test_lifecycle import first_start_serves_imagine, start

    with RelayDouble(api_key="run-key-123456") as relay:
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Run Guild")
            channel = dd.text_channels(guild)[0]
            alice = dd.add_member(guild, username="alice")
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
            clean.update(
                {
                    "NB_ENV_FILE": str(tmp_path / "absent.env"),
                    "NB_DATA_DIR": str(tmp_path / "data"),
                    "DISCORD_TOKEN": dd.token,
                    "DISCORD_API_BASE": dd.api_base,
                    "NB_RELAY_URL": relay.url,
                    "NB_RELAY_FORMAT": "gemini",
                    "NB_API_KEY": "run-key-123456",
                }
            )
            proc = await start([sys.executable, "-m", "bot", "run"], clean, ROOT)
            err = await first_start_serves_imagine(dd, relay, proc, channel, alice)
            assert b"run-key-123456" not in err  # the relay key is never logged


# ---------------------------------------------------------------- bad settings, table


@pytest.fixture
def unwritable_dir(tmp_path: Path):
    """A data dir this bot process may not write. Permissions do not bind root (CI runs as
    root), so there the folder is made immutable (chattr +i: not even root may add a file);
    otherwise it is read-only (0555). Without chattr, root gets a folder inside /proc."""
    folder = tmp_path / "ro-data"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        yield Path("/proc/self/nb-data")
        return
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def _bad_settings_cases(tmp_path: Path, unwritable: Path) -> list[tuple[str, dict[str, str], str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    garbage_key_dir = tmp_path / "garbage-key"
    garbage_key_dir.mkdir()
    (garbage_key_dir / "secret.key").write_text("this is not a fernet key\n")
    (garbage_key_dir / "secret.key").chmod(0o600)
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("\ufeffDISCORD_TOKEN=x\nthis line has no equals sign\n")
    relay = {"NB_API_KEY": "k", "NB_RELAY_FORMAT": "gemini"}
    return [
        ("short secret key", {"NB_SECRET_KEY": "short"}, "NB_SECRET_KEY"),
        ("one short key of two", {"NB_SECRET_KEY": "a-long-enough-passphrase,short"}, "NB_SECRET_KEY"),
        ("data dir under a file", {"NB_DATA_DIR": str(blocker / "data")}, "NB_DATA_DIR"),
        ("data dir not writable", {"NB_DATA_DIR": str(unwritable)}, "NB_DATA_DIR"),
        ("garbage secret.key", {"NB_DATA_DIR": str(garbage_key_dir)}, "secret.key"),
        ("relay port not a number", {"NB_RELAY_URL": "https://x.com:notaport", **relay}, "NB_RELAY_URL"),
        ("relay port out of range", {"NB_RELAY_URL": "https://x.com:99999", **relay}, "NB_RELAY_URL"),
        ("relay host with a space", {"NB_RELAY_URL": "https://exa mple.com", **relay}, "NB_RELAY_URL"),
        ("relay without a host", {"NB_RELAY_URL": "https://:443/v1", **relay}, "NB_RELAY_URL"),
        ("Discord base bad port", {"DISCORD_API_BASE": "http://127.0.0.1:abc/api/v10"}, "DISCORD_API_BASE"),
        ("retry attempts not a number", {"NB_RETRY_ATTEMPTS": "few"}, "NB_RETRY_ATTEMPTS"),
        ("relay timeout zero", {"NB_RELAY_TIMEOUT": "0"}, "NB_RELAY_TIMEOUT"),
        ("font missing", {"NB_FONT": str(tmp_path / "nope.ttf")}, "NB_FONT"),
        ("unreadable .env line", {"NB_ENV_FILE": str(bad_env)}, "bad.env:2"),
    ]


async def test_bad_settings_table_one_line_each_exit_2_nothing_connected_nothing_left(tmp_path: Path, unwritable_dir: Path) -> None:
    """Each bad setting alone, with a reachable Discord double: one line naming it, exit 2,
    the process gone at once, no Discord call made and no database created."""
    import asyncio

    from tests.doubles.discord_double import DiscordDouble

    async with DiscordDouble() as dd:
        for name, env, fragment in _bad_settings_cases(tmp_path, unwritable_dir):
            data = tmp_path / "data"
            full = {"DISCORD_TOKEN": dd.token, "DISCORD_API_BASE": dd.api_base, "NB_DATA_DIR": str(data), **env}
            mark = dd.mark()
            proc = await asyncio.to_thread(_run_bot_briefly, tmp_path, full)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
            assert len(lines) == 1 and fragment in lines[0], (name, proc.stderr)
            assert "Traceback" not in proc.stderr and "cannot reach Discord" not in proc.stderr, name
            assert dd.calls[mark:] == [], (name, dd.calls[mark:])  # checked before anything connects
            assert not (Path(full["NB_DATA_DIR"]) / "bot.sqlite3").exists(), name


def _run_bot_briefly(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    clean.update({"NB_ENV_FILE": str(tmp_path / "absent.env"), **env})
    # timeout: a process that lingers (an unclosed database thread) fails the test.
    return subprocess.run([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("url", ["https://x.com:notaport", "https://exa mple.com", "https://x.com:0"])
def test_cli_exits_2_on_a_malformed_relay_url(tmp_path: Path, url: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    clean.update({"NB_ENV_FILE": str(tmp_path / "absent.env"), "NB_RELAY_URL": url, "NB_API_KEY": "k"})
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "a cat"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "NB_RELAY_URL" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


async def test_a_refused_token_after_the_database_opened_closes_it_and_exits_at_once(tmp_path: Path) -> None:
    """Start-up fails after the database is open (Discord answers 401): one line, exit 2, and
    the process ends at once — the database (a non-daemon thread) was closed, not left open."""
    import asyncio
    import time

    from tests.doubles.discord_double import DiscordDouble

    async with DiscordDouble() as dd:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
        clean.update(
            {
                "NB_ENV_FILE": str(tmp_path / "absent.env"),
                "NB_DATA_DIR": str(tmp_path / "data"),
                "DISCORD_TOKEN": "not-the-token",
                "DISCORD_API_BASE": dd.api_base,
            }
        )
        t0 = time.monotonic()
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "bot", "run"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=30
        )
        took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert "Discord refused the token" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "data" / "bot.sqlite3").exists()  # it had been opened (and migrated)
    assert took < 15, took
