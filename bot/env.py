"""Reading one setting from the environment: each malformed value is one line naming the
variable (never echoing a value that may hold a secret), raised as :class:`SettingsError`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(Exception):
    """A missing or malformed setting; ``str()`` is a one-line explanation."""


def load_dotenv(path: Path, environ: dict[str, str]) -> None:
    """Fill ``environ`` from a ``KEY=value`` file without overriding what is already set.

    python-dotenv's parser reads what editors and other tools write: a UTF-8 byte-order mark
    (``utf-8-sig`` drops it, so the first line keeps its name), single or double quotes,
    ``export`` prefixes and ``# comments`` (after an unquoted value, a ``#`` preceded by a space).
    Nothing is interpolated, as with ``docker run --env-file``. A line it cannot read is one
    error naming the file and line; a bare ``KEY`` (no ``=``) sets nothing.
    """
    if not path.is_file():
        return
    from dotenv.parser import parse_stream

    try:
        with path.open(encoding="utf-8-sig") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    for binding in bindings:
        if binding.error:
            raise SettingsError(f"{path}:{binding.original.line}: expected KEY=value")
        if binding.key is not None and binding.value is not None:
            environ.setdefault(binding.key, binding.value)


def choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not valid; use one of: {', '.join(allowed)}")
    return value


def integer(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
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


def optional_int(env: Mapping[str, str], name: str) -> int | None:
    return integer(env, name, -1, 0) if env.get(name, "").strip() else None


def flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value; use 1 or 0")


# A host name as URLs carry it (letters, digits, hyphens, dots; IDNs after idna encoding),
# or a bracketed IPv6 literal: anything else (a space, a stray character) is a typo.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)$")


def http_url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    shown = raw.strip().split("?", 1)[0]  # a query may hold a key: never echo it
    if not (url.startswith("http://") or url.startswith("https://")) or "://" == url[-3:]:
        raise SettingsError(f"{name} must be an http(s) URL, got {shown!r}")
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    host = netloc
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.partition(":")[0]
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        ascii_host = ""
    if not _HOST.match(ascii_host):
        raise SettingsError(f"{name} has no valid host name in {shown!r}")
    try:
        parts.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise SettingsError(f"{name} has an invalid port in {shown!r} (a number from 1 to 65535)") from None
    if netloc.endswith(":") or parts.port == 0:
        raise SettingsError(f"{name} has an invalid port in {shown!r} (a number from 1 to 65535)")
    return url


def number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):  # also refuses nan and inf
        raise SettingsError(f"{name}={raw} must be at least {minimum:g}")
    return value
