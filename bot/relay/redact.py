"""Keeping relay API keys out of every message, log record and exception text.

Some relays take the key in the URL (``?key=``), and httpx puts the URL in its INFO log line
("HTTP Request: POST https://relay/...?key=SECRET") and in some exception texts. So redaction
works two ways at once:

- known secrets are registered (:func:`register_secret`) and replaced wherever they appear,
  URL-encoded forms and an ``sk-``-less form included (some relays strip that prefix and
  echo the rest back in their errors);
- patterns that carry a secret by construction (``key=`` query values, ``Bearer`` tokens,
  ``x-goog-api-key:`` headers) are masked even when the secret was never registered.

:class:`RedactingFilter` applies the same to log records; it is installed on the ``httpx``
and ``httpcore`` loggers on import and can be attached to any handler (the bot attaches it
to its root handler).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Secrets shorter than this are not replaced on their own (a 3-letter "key" would blank out
# ordinary words); the patterns below still mask them in key=/Bearer positions.
_MIN_SECRET = 6

# (A ")" ends the value too: a URL quoted in a message is often followed by one.)
_QUERY = re.compile(r"(?i)([?&;](?:key|api[_-]?key|apikey|access[_-]?token|token|auth|secret)=)[^&#\s\"'<>)]+")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+")
_HEADER = re.compile(r"(?i)((?:x-goog-api-key|x-api-key|api-key|authorization)[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;}]+")
# OpenAI-style keys that were never registered (e.g. a relay echoing some other key back).
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")

_lock = threading.Lock()
_secrets: set[str] = set()


def _variants(secret: str) -> set[str]:
    out = {secret, quote(secret, safe=""), quote_plus(secret)}
    if secret.lower().startswith("sk-") and len(secret) - 3 >= _MIN_SECRET:
        out.add(secret[3:])
    return {v for v in out if len(v) >= _MIN_SECRET}


def register_secret(secret: str | None) -> None:
    """Remember a secret so that every later redaction removes it (idempotent)."""
    if not secret or len(secret.strip()) < 1:
        return
    with _lock:
        _secrets.update(_variants(secret.strip()))


def redact(text: Any, extra: Iterable[str] = ()) -> str:
    """``text`` (anything str()-able) with registered secrets, ``extra`` and key patterns masked."""
    out = text if isinstance(text, str) else str(text)
    secrets: set[str] = set()
    for item in extra:
        if item:
            secrets.update(_variants(item.strip()) or {item.strip()})
    with _lock:
        secrets.update(_secrets)
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, MASK)
    out = _QUERY.sub(lambda m: m.group(1) + MASK, out)
    out = _BEARER.sub(lambda m: m.group(1) + MASK, out)
    out = _HEADER.sub(lambda m: m.group(1) + MASK, out)
    out = _SK.sub("sk-" + MASK, out)
    return out


def redact_url(url: Any) -> str:
    """A URL safe to show: query values that carry keys masked, registered secrets removed."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (after %-formatting) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not a leak
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Format the traceback now, redacted, so handlers reuse the clean text.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_log_filters(*logger_names: str) -> None:
    """Attach the redacting filter to these loggers (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# httpx logs every request URL at INFO; httpcore traces at DEBUG. Logger filters only see
# records created on that exact logger, hence the explicit httpcore children.
install_log_filters(
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "bot.relay",
)
