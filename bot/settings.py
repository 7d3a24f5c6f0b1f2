"""Operator settings, read from the environment (and an optional ``.env`` file).

Every problem becomes a :class:`SettingsError` whose message is one line an operator can act
on; ``python -m bot`` prints it and exits instead of showing a traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DIALECTS = ("gemini", "openai-images", "openai-chat")
AUTH_STYLES = ("query", "bearer", "x-goog-api-key")
DEFAULT_DISCORD_API = "https://discord.com/api/v10"


class SettingsError(Exception):
    """A missing or malformed setting; ``str()`` is a one-line explanation."""


def load_dotenv(path: Path, environ: dict[str, str]) -> None:
    """Fill ``environ`` from a ``KEY=value`` file without overriding what is already set."""
    if not path.is_file():
        return
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{lineno}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            # An unquoted value may end in a comment: NB_RELAY_FORMAT=gemini   # or openai-chat
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        environ.setdefault(key.strip(), value)


def model_aliases(env: Mapping[str, str]) -> dict[str, str]:
    """``NB_MODEL_ALIASES=catalogue-id=relay-name,...``: what the operator's relay calls each
    model (seed 002's relays say ``nano-banana-pro`` for gemini-3-pro-image-preview)."""
    from .relay.catalogue import MODELS, resolve_model
    from .relay.types import InvalidRequest

    raw = env.get("NB_MODEL_ALIASES", "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise SettingsError(f"NB_MODEL_ALIASES entry {item!r} is not id=relay-model")
        try:
            spec = resolve_model(ours.strip())
        except InvalidRequest:
            raise SettingsError(f"NB_MODEL_ALIASES: unknown model {ours.strip()!r}; known: {', '.join(MODELS)}") from None
        out[spec.id] = theirs.strip()
    return out


@dataclass(frozen=True)
class DefaultRelay:
    """The operator's relay, used by the CLI and by servers that have none of their own."""

    url: str
    dialect: str
    auth: str
    api_key: str = field(repr=False)
    model_aliases: dict[str, str] = field(default_factory=dict)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not valid; use one of: {', '.join(allowed)}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    return _int(env, name, -1, 0) if env.get(name, "").strip() else None


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value; use 1 or 0")


def _url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    if not (url.startswith("http://") or url.startswith("https://")) or "://" == url[-3:]:
        shown = raw.split("?", 1)[0]  # a query may hold a key: never echo it
        raise SettingsError(f"{name} must be an http(s) URL, got {shown!r}")
    return url


def parse_relay(
    env: Mapping[str, str],
    *,
    url: str | None = None,
    dialect: str | None = None,
    auth: str | None = None,
) -> DefaultRelay | None:
    """The operator relay from ``NB_RELAY_*`` and ``NB_API_KEY``; flags override all but the key."""
    raw_url = url or env.get("NB_RELAY_URL", "").strip()
    if not raw_url:
        return None
    fmt = dialect or _choice(env, "NB_RELAY_FORMAT", DIALECTS, "gemini")
    if fmt not in DIALECTS:
        raise SettingsError(f"format {fmt!r} is not valid; use one of: {', '.join(DIALECTS)}")
    default_auth = "query" if fmt == "gemini" else "bearer"
    style = auth or _choice(env, "NB_RELAY_AUTH", AUTH_STYLES, default_auth)
    if style not in AUTH_STYLES:
        raise SettingsError(f"auth {style!r} is not valid; use one of: {', '.join(AUTH_STYLES)}")
    key = env.get("NB_API_KEY", "").strip()
    if not key:
        raise SettingsError("NB_API_KEY is not set: the relay needs an API key (it is read only from the environment)")
    return DefaultRelay(url=relay_base_url(_url("NB_RELAY_URL", raw_url)), dialect=fmt, auth=style, api_key=key, model_aliases=model_aliases(env))


# What people paste from a relay's docs: a whole endpoint instead of its base.
_ENDPOINT_SUFFIX = re.compile(r"(/chat/completions|/images/(generations|edits)|/models/[^/]+:(stream)?[gG]enerateContent)$")


def relay_base_url(url: str) -> str:
    """The relay's base URL: a pasted endpoint is cut back to its base, a query is refused
    (a key in a URL would end up in logs and lists; it belongs in NB_API_KEY)."""
    if "?" in url or "#" in url:
        raise SettingsError("NB_RELAY_URL must be the relay's base URL without a query; put the key in NB_API_KEY")
    return _ENDPOINT_SUFFIX.sub("", url).rstrip("/")


@dataclass(frozen=True)
class Settings:
    discord_token: str = field(repr=False)
    data_dir: Path
    relay: DefaultRelay | None
    discord_api_base: str = DEFAULT_DISCORD_API
    secret_key: str | None = field(default=None, repr=False)
    allow_private_relays: bool = False
    # Servers without a relay of their own may use the operator's relay only when this is on.
    share_default_relay: bool = True
    retention_days: int = 30
    max_concurrent_jobs: int = 4
    max_jobs_per_guild: int = 2
    max_jobs_per_user: int = 1
    # Operator credit limits for servers that use the shared default relay (None: no extra limit).
    shared_user_daily: int | None = None
    shared_guild_daily: int | None = None
    shared_guild_monthly: int | None = None
    log_level: str = "INFO"
    owner_ids: frozenset[int] = frozenset()
    message_content_intent: bool = False

    @property
    def db_path(self) -> Path:
        return self.data_dir / "bot.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


def load_settings(environ: Mapping[str, str] | None = None, *, require_token: bool = True) -> Settings:
    env = dict(os.environ if environ is None else environ)
    load_dotenv(Path(env.get("NB_ENV_FILE", ".env")), env)

    token = env.get("DISCORD_TOKEN", "").strip()
    if require_token and not token:
        raise SettingsError("DISCORD_TOKEN is not set: create a bot at https://discord.com/developers and put its token in the environment or .env")

    owners: set[int] = set()
    for part in env.get("NB_OWNER_IDS", "").replace(",", " ").split():
        if not part.isdigit():
            raise SettingsError(f"NB_OWNER_IDS must be Discord user ids separated by commas, got {part!r}")
        owners.add(int(part))

    level = env.get("NB_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"NB_LOG_LEVEL={level!r} is not valid; use DEBUG, INFO, WARNING or ERROR")

    api_base = env.get("DISCORD_API_BASE", "").strip()
    return Settings(
        discord_token=token,
        data_dir=Path(env.get("NB_DATA_DIR", "").strip() or "./data"),
        relay=parse_relay(env),
        discord_api_base=_url("DISCORD_API_BASE", api_base) if api_base else DEFAULT_DISCORD_API,
        secret_key=env.get("NB_SECRET_KEY", "").strip() or None,
        allow_private_relays=_flag(env, "NB_ALLOW_PRIVATE_RELAYS"),
        share_default_relay=_flag(env, "NB_SHARE_DEFAULT_RELAY", True),
        retention_days=_int(env, "NB_RETENTION_DAYS", 30, 1),
        max_concurrent_jobs=_int(env, "NB_MAX_JOBS", 4, 1),
        max_jobs_per_guild=_int(env, "NB_MAX_JOBS_PER_GUILD", 2, 1),
        max_jobs_per_user=_int(env, "NB_MAX_JOBS_PER_USER", 1, 1),
        shared_user_daily=_optional_int(env, "NB_SHARED_USER_DAILY"),
        shared_guild_daily=_optional_int(env, "NB_SHARED_GUILD_DAILY"),
        shared_guild_monthly=_optional_int(env, "NB_SHARED_GUILD_MONTHLY"),
        log_level=level,
        owner_ids=frozenset(owners),
        message_content_intent=_flag(env, "NB_MESSAGE_CONTENT_INTENT"),
    )
