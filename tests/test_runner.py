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
