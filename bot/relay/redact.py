"""Keeping relay API keys out of every message, log record and exception text.

Some relays take the key in the URL (``?key=``), and httpx puts the URL in its INFO log line
("HTTP Request: POST https://relay/...?key=SECRET") and in some exception texts. So redaction
works two ways at once:

- known secrets are replaced wherever they appear, URL-encoded forms and an ``sk-``-less form
  included (some relays strip that prefix and echo the rest back in their errors);
- patterns that carry a secret by construction (``key=`` query values, ``Bearer`` tokens,
  ``x-goog-api-key:`` headers) are masked even when the secret was never registered.

Which secrets, where:
- A *message* (an error, a relay's words, the model's text) is redacted with the operator's
  keys (:func:`register_secret` with ``operator=True``: NB_API_KEY, the shared default relay)
  plus the keys passed as ``extra`` - the relay that produced it. Other servers' keys are not
  looked for: one server's key cannot blank a word out of another server's messages, and the
  cost does not grow with the number of stored keys.
- A *log record* (:class:`RedactingFilter`) is redacted with every key registered, operator
  and stored relays' alike, as any of them may reach a log line.
- Secrets shorter than :data:`MIN_SECRET` characters are never replaced as plain text (a key
  ``picture`` would turn that word into ``***``); the patterns still mask them in
  ``key=``/``Bearer``/header positions. No relay issues keys that short.

Matching is one pass whatever the number of keys: the text is cut into candidate tokens by one
compiled pattern, and each token's substrings of the lengths keys have are looked up in a set
(a handful of distinct lengths). 100k stored keys cost the same as ten.

:func:`cut` is how every capped text is made: redact first, then cut, and a key the cut would
leave half-shown is masked too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET = 8
# A cut that leaves this many characters of a key at its end masks them.
_MIN_PARTIAL = 4

# (A ")" ends the value too: a URL quoted in a message is often followed by one.)
_QUERY = re.compile(r"(?i)([?&;](?:key|api[_-]?key|apikey|access[_-]?token|token|auth|secret)=)[^&#\s\"'<>)]+")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+")
_HEADER = re.compile(r"(?i)((?:x-goog-api-key|x-api-key|api-key|authorization)[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;}]+")
# Discord interaction tokens in webhook and callback URLs (a credential for 15 minutes each;
# too many and too short-lived to register one by one).
_DISCORD_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_\-.]{20,}")
# OpenAI-style keys that were never registered (e.g. a relay echoing some other key back).
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
# Where a key may sit: a run without spaces, quotes or brackets. A key holding one of those
# characters is matched by a pattern of its own instead (see _Matcher).
_TOKEN = re.compile(rf"[^\s\"'<>()\[\]{{}},;]{{{MIN_SECRET},}}")
_TOKEN_CHAR = re.compile(r"[^\s\"'<>()\[\]{},;]+")

_lock = threading.Lock()
_operator: set[str] = set()
_stored: set[str] = set()
_version = 0  # bumped when the operator's keys change: the scoped matchers are cached by them


_everything: tuple[int, _Matcher] | None = None  # (version, matcher of every key), kept up to date


def _variants(secret: str) -> frozenset[str]:
    out = {secret, quote(secret, safe=""), quote_plus(secret)}
    if secret.lower().startswith("sk-"):
        out.add(secret[3:])
    return frozenset(v for v in out if len(v) >= MIN_SECRET)


class _Matcher:
    """Finds any of a set of secrets in a text in one pass (see the module docstring)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.by_length: dict[int, set[str]] = {}
        self._odd: set[str] = set()
        self.secrets: set[str] = set()
        self.update(secrets, add=True)

    def update(self, secrets: Iterable[str], *, add: bool) -> None:
        """Add or remove secrets in place (cheap: no rebuild for one more stored key)."""
        for secret in secrets:
            if add:
                self.secrets.add(secret)
                if _TOKEN_CHAR.fullmatch(secret):
                    self.by_length.setdefault(len(secret), set()).add(secret)
                else:
                    self._odd.add(secret)
            else:
                self.secrets.discard(secret)
                self._odd.discard(secret)
                bucket = self.by_length.get(len(secret))
                if bucket is not None:
                    bucket.discard(secret)
                    if not bucket:
                        del self.by_length[len(secret)]
        self.lengths = sorted(self.by_length, reverse=True)
        odd = sorted(self._odd, key=len, reverse=True)
        self.odd = re.compile("|".join(map(re.escape, odd))) if odd else None

    def sub(self, text: str) -> str:
        if self.odd is not None:
            text = self.odd.sub(MASK, text)
        if not self.lengths or len(text) < self.lengths[-1]:
            return text
        pieces: list[str] = []
        at = 0
        shortest = self.lengths[-1]
        for match in _TOKEN.finditer(text):
            token, base = match.group(0), match.start()
            if len(token) < shortest:
                continue
            i = 0
            while i <= len(token) - shortest:
                for length in self.lengths:
                    if i + length <= len(token) and token[i : i + length] in self.by_length.get(length, ()):
                        pieces += (text[at : base + i], MASK)
                        at = base + i + length
                        i += length
                        break
                else:
                    i += 1
        if not pieces:
            return text
        pieces.append(text[at:])
        return "".join(pieces)


def register_secret(secret: str | None, *, operator: bool = False) -> None:
    """Remember a secret (idempotent). ``operator=True``: one of the operator's keys, masked in
    every message; otherwise a stored relay's key, masked in log records (its own relay's
    messages pass it as ``extra``). Register a relay's key once it is stored, not before."""
    global _version
    variants = _variants((secret or "").strip())
    if not variants:
        return
    with _lock:
        target = _operator if operator else _stored
        if not variants <= target:
            target.update(variants)
            if _everything is not None:
                _everything[1].update(variants, add=True)
            if operator:
                _version += 1


def forget_secret(secret: str | None) -> None:
    """Stop looking for a stored relay's key (it was replaced or its relay removed)."""
    global _version
    variants = _variants((secret or "").strip())
    with _lock:
        gone = (variants & _stored) - _operator
        if gone:
            _stored.difference_update(gone)
            if _everything is not None:
                _everything[1].update(gone, add=False)


@lru_cache(maxsize=256)
def _matcher(secrets: frozenset[str]) -> _Matcher:
    # (Never updated in place: a scoped matcher is shared by every call with the same keys.)
    return _Matcher(secrets)


# The keys of the relay being talked to, for everything redacted while doing so (the parsers
# build messages without knowing the relay): see relay_scope().
_relay_keys: ContextVar[tuple[str, ...]] = ContextVar("relay_keys", default=())


@contextlib.contextmanager
def relay_scope(*keys: str):  # -> Iterator[None]
    """Within this block (and the tasks and threads it starts), :func:`redact` and :func:`cut`
    also mask ``keys``."""
    token = _relay_keys.set(tuple(k for k in keys if k) + _relay_keys.get())
    try:
        yield
    finally:
        _relay_keys.reset(token)


def _scope(extra: Iterable[str], *, everything: bool = False) -> _Matcher:
    global _everything
    if everything:
        with _lock:
            if _everything is None or _everything[0] != _version:
                # Built once per change of the registry, not per record.
                _everything = (_version, _Matcher(_operator | _stored))
            return _everything[1]
    secrets: set[str] = set()
    for item in (*extra, *_relay_keys.get()):
        if item:
            secrets |= _variants(item.strip())
    with _lock:
        secrets |= _operator
    return _matcher(frozenset(secrets))


def _patterns(out: str) -> str:
    out = _QUERY.sub(lambda m: m.group(1) + MASK, out)
    out = _BEARER.sub(lambda m: m.group(1) + MASK, out)
    out = _HEADER.sub(lambda m: m.group(1) + MASK, out)
    out = _DISCORD_TOKEN.sub(lambda m: m.group(1) + MASK, out)
    return _SK.sub("sk-" + MASK, out)


def redact(text: Any, extra: Iterable[str] = ()) -> str:
    """``text`` (anything str()-able) with the operator's keys, ``extra`` (the keys of the
    relay the text came from) and key patterns masked."""
    out = text if isinstance(text, str) else str(text)
    return _patterns(_scope(extra).sub(out))


def redact_everywhere(text: Any) -> str:
    """Like :func:`redact` with every registered key: for log records."""
    out = text if isinstance(text, str) else str(text)
    return _patterns(_scope((), everything=True).sub(out))


# What a relay's text must not bring to a terminal (or a Discord message): C0 controls but tab
# and newline, DEL, C1 controls (ESC starts ANSI sequences that rewrite the screen or the window
# title, CR returns to the start of the line, BEL rings), and the bidirectional overrides that
# reorder what is shown (U+202A-U+202E, U+2066-U+2069).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with terminal control characters replaced by spaces (newlines kept)."""
    return _CONTROLS.sub(" ", text)


def terminal_safe(text: str) -> str:
    """``text`` as one printable line: continuation lines indented, so text from a relay can
    never start a line of its own (a forged "Saved /tmp/x.png", say)."""
    return printable(text).replace("\n", "\n    ")


def cut(text: Any, limit: int, extra: Iterable[str] = (), *, ellipsis: str = "…") -> str:
    """``text`` redacted, *then* cut to ``limit`` characters (``ellipsis`` marking a cut).

    Only a window of ``limit`` plus the longest key is redacted (a key straddling the cut is
    inside it, hence masked whole); then, if what is left ends in the first characters of a
    key - one the relay itself cut short, say - those are masked too."""
    raw = printable(text if isinstance(text, str) else str(text))
    extra = [e for e in extra if e]
    matcher = _scope(extra)
    margin = (matcher.lengths[0] if matcher.lengths else 0) + 256  # 256: the patterns' values
    window = raw[: limit + margin]
    out = _patterns(matcher.sub(window))
    if len(out) <= limit and len(window) == len(raw):
        return _mask_partial(out, matcher)
    return _mask_partial(out[: max(0, limit - len(ellipsis))], matcher) + ellipsis


def _mask_partial(text: str, matcher: _Matcher) -> str:
    tail = re.search(r"[^\s\"'<>()\[\]{},;=&?:/]+\Z", text)
    if tail is None or len(tail.group(0)) < _MIN_PARTIAL:
        return text
    piece = tail.group(0)
    for secret in matcher.secrets:
        # The end of the text is the start of a key (the rest cut away), or the end of a token
        # that continues as one: mask from where the key would begin.
        for start in range(len(piece) - _MIN_PARTIAL + 1):
            if secret.startswith(piece[start:]):
                return text[: tail.start() + start] + MASK
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (after %-formatting) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not a leak
            return True
        cleaned = printable(redact_everywhere(message))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Format the traceback now, redacted, so handlers reuse the clean text.
            record.exc_text = redact_everywhere(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_everywhere(record.exc_text)
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
