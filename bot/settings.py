"""Operator settings, read from the environment (and an optional ``.env`` file).

Every problem becomes a :class:`SettingsError` whose message is one line an operator can act
on; ``python -m bot`` prints it and exits instead of showing a traceback.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .env import SettingsError, choice, flag, http_url, integer, load_dotenv, number, optional_int
from .image_store_s3 import S3Config, parse_config
from .relay.types import AUTH_STYLES, DIALECTS, default_auth

DEFAULT_DISCORD_API = "https://discord.com/api/v10"


def model_aliases(env: Mapping[str, str]) -> dict[str, str]:
    """``NB_MODEL_ALIASES=catalogue-id=relay-name,...``: what the operator's relay calls each
    model (some relays say ``nano-banana-pro`` for gemini-3-pro-image-preview)."""
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


@dataclass(frozen=True)
class RetryPolicy:
    """How the relay client retries (``NB_RETRY_*``) and how long one attempt may take
    (``NB_RELAY_TIMEOUT``; unset: an allowance per picture size). The CLI and the bot share it."""

    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None


def retry_policy(env: Mapping[str, str]) -> RetryPolicy:
    timeout_raw = env.get("NB_RELAY_TIMEOUT", "").strip()
    return RetryPolicy(
        attempts=int(number(env, "NB_RETRY_ATTEMPTS", 4, 1)),
        backoff=number(env, "NB_RETRY_BACKOFF", 1.0, 0),
        max_backoff=number(env, "NB_RETRY_MAX_BACKOFF", 60.0, 0),
        timeout=number(env, "NB_RELAY_TIMEOUT", 0, 0.001) if timeout_raw else None,
    )


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
    fmt = dialect or choice(env, "NB_RELAY_FORMAT", DIALECTS, "gemini")
    if fmt not in DIALECTS:
        raise SettingsError(f"format {fmt!r} is not valid; use one of: {', '.join(DIALECTS)}")
    style = auth or choice(env, "NB_RELAY_AUTH", AUTH_STYLES, default_auth(fmt))
    if style not in AUTH_STYLES:
        raise SettingsError(f"auth {style!r} is not valid; use one of: {', '.join(AUTH_STYLES)}")
    key = env.get("NB_API_KEY", "").strip()
    if not key:
        raise SettingsError("NB_API_KEY is not set: the relay needs an API key (it is read only from the environment)")
    return DefaultRelay(
        url=relay_base_url(http_url("NB_RELAY_URL", raw_url)), dialect=fmt, auth=style, api_key=key, model_aliases=model_aliases(env)
    )


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
    # NB_USER_INSTALL: members may install the app on their account and use it in DMs, group DMs
    # and servers the bot is not in. Requests without a server run on the operator's relay under
    # the personal quota: NB_USER_DAILY per member per day, NB_PERSONAL_DAILY / _MONTHLY for all
    # members' personal use together (None: no such limit).
    user_install: bool = True
    user_daily: int = 10
    personal_daily: int | None = None
    personal_monthly: int | None = None
    log_level: str = "INFO"
    owner_ids: frozenset[int] = frozenset()
    message_content_intent: bool = False
    retry: RetryPolicy = RetryPolicy()
    # A font file for the usage chart; unset: fontconfig's best CJK-capable match.
    font: Path | None = None
    # NB_DATABASE_URL: a postgresql:// server shared by several processes; None: SQLite in data_dir.
    database_url: str | None = field(default=None, repr=False)
    # What this process does (`python -m bot run --role`): all | gateway | worker.
    role: str = "all"
    # NB_SHARD_COUNT / NB_SHARD_IDS: this gateway process's shard range (None: discord.py's own).
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    # NB_JOB_LEASE_S: how long a worker's claim on a running job holds without a heartbeat
    # (PostgreSQL only): a killed worker's jobs are interrupted and refunded this long after.
    job_lease_s: int = 30
    # NB_IMAGE_STORE=s3://bucket/prefix (+ NB_S3_*): pictures in a bucket; None: NB_DATA_DIR/images.
    image_store: S3Config | None = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "bot.sqlite3"

    @property
    def database(self) -> str | Path:
        """What :func:`bot.store.connect` opens: the PostgreSQL URL, else the SQLite file."""
        return self.database_url or self.db_path

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


def image_store(env: Mapping[str, str]) -> S3Config | None:
    raw = env.get("NB_IMAGE_STORE", "").strip()
    if not raw or raw == "local":
        return None
    try:
        return parse_config(raw, env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def database_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("NB_DATABASE_URL", "").strip()
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        # The value may hold a password: name the variable, never echo it.
        raise SettingsError("NB_DATABASE_URL must be a postgresql://user:password@host:port/database URL (unset: SQLite in NB_DATA_DIR)")
    return raw


ROLES = ("all", "gateway", "worker")


def shards(env: Mapping[str, str]) -> tuple[int | None, tuple[int, ...] | None]:
    """NB_SHARD_COUNT and NB_SHARD_IDS (``0,1`` or ``0-3``): ids need a count, each below it."""
    count = optional_int(env, "NB_SHARD_COUNT")
    raw = env.get("NB_SHARD_IDS", "").replace(" ", "")
    if count is not None and count < 1:
        raise SettingsError("NB_SHARD_COUNT must be 1 or more")
    if not raw:
        return count, None
    if count is None:
        raise SettingsError("NB_SHARD_IDS needs NB_SHARD_COUNT (the total number of shards across all gateway processes)")
    ids: list[int] = []
    for part in raw.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise SettingsError(f"NB_SHARD_IDS must be shard numbers or ranges, e.g. 0,1 or 0-3; got {part!r}")
        ids += range(int(low), int(high or low) + 1)
    if any(i >= count for i in ids) or len(set(ids)) != len(ids):
        raise SettingsError(f"NB_SHARD_IDS must name distinct shards below NB_SHARD_COUNT={count}")
    return count, tuple(sorted(ids))


def check_role(role: str, database_url: str | None) -> str:
    if role not in ROLES:
        raise SettingsError(f"--role must be one of {', '.join(ROLES)}; got {role!r}")
    if role != "all" and database_url is None:
        # SQLite is one process's database: a gateway and a worker cannot share it.
        raise SettingsError(f"--role {role} needs NB_DATABASE_URL (a PostgreSQL server the processes share)")
    return role


def data_dir_from(env: Mapping[str, str]) -> Path:
    return Path(env.get("NB_DATA_DIR", "").strip() or "./data")


def personal_use(env: Mapping[str, str]) -> dict[str, Any]:
    """NB_USER_INSTALL and the personal quota (requests without a server), as Settings fields."""
    return {
        "user_install": flag(env, "NB_USER_INSTALL", True),
        "user_daily": integer(env, "NB_USER_DAILY", 10),
        "personal_daily": optional_int(env, "NB_PERSONAL_DAILY"),
        "personal_monthly": optional_int(env, "NB_PERSONAL_MONTHLY"),
    }


def load_settings(environ: Mapping[str, str] | None = None, *, require_token: bool = True, role: str = "all") -> Settings:
    env = dict(os.environ if environ is None else environ)
    load_dotenv(Path(env.get("NB_ENV_FILE", ".env")), env)

    token = env.get("DISCORD_TOKEN", "").strip()
    if require_token and not token:
        raise SettingsError(
            "DISCORD_TOKEN is not set: create a bot at https://discord.com/developers and put its token in the environment or .env"
        )
    owners: set[int] = set()
    for part in env.get("NB_OWNER_IDS", "").replace(",", " ").split():
        if not part.isdigit():
            raise SettingsError(f"NB_OWNER_IDS must be Discord user ids separated by commas, got {part!r}")
        owners.add(int(part))

    level = env.get("NB_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"NB_LOG_LEVEL={level!r} is not valid; use DEBUG, INFO, WARNING or ERROR")

    api_base = env.get("DISCORD_API_BASE", "").strip()
    secret = env.get("NB_SECRET_KEY", "").strip() or None
    if secret is not None:
        from .secrets import SecretError, check_master_key

        try:
            check_master_key(secret)
        except SecretError as exc:
            raise SettingsError(str(exc)) from None
    font_raw = env.get("NB_FONT", "").strip()
    if font_raw and not Path(font_raw).is_file():
        raise SettingsError(f"NB_FONT={font_raw!r} is not a font file")
    url = database_url(env)
    shard_count, shard_ids = shards(env)
    return Settings(
        discord_token=token,
        data_dir=data_dir_from(env),
        relay=parse_relay(env),
        discord_api_base=http_url("DISCORD_API_BASE", api_base) if api_base else DEFAULT_DISCORD_API,
        secret_key=secret,
        allow_private_relays=flag(env, "NB_ALLOW_PRIVATE_RELAYS"),
        share_default_relay=flag(env, "NB_SHARE_DEFAULT_RELAY", True),
        retention_days=integer(env, "NB_RETENTION_DAYS", 30, 1),
        max_concurrent_jobs=integer(env, "NB_MAX_JOBS", 4, 1),
        max_jobs_per_guild=integer(env, "NB_MAX_JOBS_PER_GUILD", 2, 1),
        max_jobs_per_user=integer(env, "NB_MAX_JOBS_PER_USER", 1, 1),
        shared_user_daily=optional_int(env, "NB_SHARED_USER_DAILY"),
        shared_guild_daily=optional_int(env, "NB_SHARED_GUILD_DAILY"),
        shared_guild_monthly=optional_int(env, "NB_SHARED_GUILD_MONTHLY"),
        **personal_use(env),
        log_level=level,
        owner_ids=frozenset(owners),
        message_content_intent=flag(env, "NB_MESSAGE_CONTENT_INTENT"),
        retry=retry_policy(env),
        font=Path(font_raw) if font_raw else None,
        database_url=url,
        role=check_role(role, url),
        shard_count=shard_count,
        shard_ids=shard_ids,
        job_lease_s=integer(env, "NB_JOB_LEASE_S", 30, 3),
        image_store=image_store(env),
    )


def check_data_dir(settings: Settings) -> None:
    """Make sure the bot can write its data dir before it opens anything: created if missing,
    a file really written and removed in it and in the images folder, the database file (if any)
    writable. A bind-mounted folder owned by another user is the usual cause, hence the uid."""
    name = f"NB_DATA_DIR={str(settings.data_dir)!r}"
    hint = f"the bot runs as uid {os.getuid()}" if hasattr(os, "getuid") else ""
    try:
        # The images folder only when pictures are kept on this disk (not NB_IMAGE_STORE=s3://…).
        for folder in (settings.data_dir,) if settings.image_store else (settings.data_dir, settings.images_dir):
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        if settings.db_path.exists() and not os.access(settings.db_path, os.R_OK | os.W_OK):
            raise PermissionError(f"{settings.db_path.name} is not writable")
        key_file = settings.data_dir / "secret.key"
        if settings.secret_key is None and key_file.exists() and not os.access(key_file, os.R_OK):
            raise PermissionError(f"{key_file.name} is not readable")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SettingsError(
            f"{name} is not a writable folder ({reason}; {hint})" if hint else f"{name} is not a writable folder ({reason})"
        ) from None
