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
    import asyncio
    import signal

    from tests.doubles.discord_double import DiscordDouble
    from tests.doubles.relay_double import RelayDouble

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
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", cwd=str(ROOT), env=clean,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                await dd.wait_until_identified(timeout=30)
                await dd.wait_for("PUT", r"^/applications/\d+/commands$", timeout=30)  # first start: commands synced
                mark = dd.mark()
                await dd.interact(dd.slash_interaction("imagine", channel=channel, user=alice, options={"prompt": "a lighthouse"}))
                post = await dd.wait_for("POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=30)
                assert post.files[0].data == relay.images_served[-1]
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert b"Traceback" not in err
            assert b"run-key-123456" not in err  # the relay key is never logged
