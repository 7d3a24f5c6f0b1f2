"""A heartbeat file the running bot keeps fresh, and ``python -m bot health`` that reads it.

The bot writes ``<data_dir>/heartbeat.json`` (``{"connected": bool, "at": unix time, "pid": n}``)
every :data:`BEAT_S` seconds and whenever the gateway connects or drops; on a clean stop it
writes ``connected: false``. ``health`` exits 0 only when the file says *connected* and is
younger than :data:`STALE_S` — so a hung process (no fresh beat) is unhealthy too. Docker's
``HEALTHCHECK`` runs it inside the container, where the data dir is the same volume.

No Discord imports: the check runs in a separate short process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

FILE = "heartbeat.json"
BEAT_S = 15.0
# Three missed beats: a busy loop may delay one, never three.
STALE_S = 3 * BEAT_S


def write(data_dir: Path, connected: bool) -> None:
    """Replace the heartbeat atomically (a reader never sees half a file)."""
    path = data_dir / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"connected": connected, "at": time.time(), "pid": os.getpid()}))
    os.replace(tmp, path)


def status(data_dir: Path, *, now: float | None = None) -> tuple[bool, str]:
    """``(healthy, one line)`` from the heartbeat file."""
    path = data_dir / FILE
    try:
        beat = json.loads(path.read_text())
        at = float(beat["at"])
        connected = beat["connected"] is True
    except FileNotFoundError:
        return False, f"no heartbeat in {data_dir}: the bot has not connected yet (or runs with another NB_DATA_DIR)"
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"{path} is unreadable"
    age = (time.time() if now is None else now) - at
    if age > STALE_S:
        return False, f"last heartbeat {age:.0f} s ago: the bot is not running or is stuck"
    if not connected:
        # The bot writes connected=false when the gateway drops and when it stops cleanly.
        return False, "the bot is not connected to Discord (reconnecting, or stopped)"
    return True, f"connected to Discord (heartbeat {max(age, 0):.0f} s ago)"


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m bot health   exit 0 when the bot in NB_DATA_DIR is connected to Discord, 1 otherwise")
        return 0
    from .env import SettingsError, load_dotenv
    from .settings import data_dir_from

    env = dict(os.environ)
    try:
        load_dotenv(Path(env.get("NB_ENV_FILE", ".env")), env)
    except SettingsError as exc:
        print(f"nano-banana-bot: {exc}", file=sys.stderr)
        return 2
    healthy, line = status(data_dir_from(env))
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1
