"""What gateways in front of a relay (LiteLLM's proxy; new-api and one-api style relays) do to
errors, and how to read them back.

Facts this relies on (seen from LiteLLM 1.108 in front of Google's API):
- LiteLLM wraps the provider's error as text inside its own envelope:
  ``{"error": {"message": "litellm.RateLimitError: litellm.RateLimitError: GeminiException -
  {\\"error\\": {\\"code\\": 429, \\"message\\": \\"You exceeded your current quota...\\",
  \\"details\\": [{\\"@type\\": \\"...RetryInfo\\", \\"retryDelay\\": \\"7s\\"}]}}\\n\\nLiteLLM:
  model group '...' failed ...", "type": "throttling_error", "code": "429"}}``. The words a
  member should read are the innermost ``message``; Google's ``RetryInfo.retryDelay`` is only
  inside that string.
- It passes the provider's response headers on with an ``llm_provider-`` prefix
  (``llm_provider-retry-after: 7``) on its native routes; the pass-through route keeps
  ``retry-after`` itself. Every answer carries ``x-litellm-*`` headers (call id, version, and
  ``x-litellm-timeout``: its own time limit in seconds).
- A parameter the provider does not take is refused with HTTP 400 before anything is sent
  upstream: "Setting `response_format` is not supported by gemini, ... To drop it from the
  call, set `litellm.drop_params = True`." (OpenAI itself says "Unrecognized request argument
  supplied: x" / "Unknown parameter: 'x'".) A 400 costs nothing, so one resend without the
  named field is safe when the field is optional.
- Its own timeout answers HTTP 408 (``litellm.Timeout``): the gateway gave up, not the model.
- It retries failed upstream calls itself (``num_retries``, default 2 on the proxy's router:
  3 upstream calls per request of ours), so our attempts multiply with its.
"""

from __future__ import annotations

import ast
import email.utils
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from .answer import ErrorInfo, error_info

log = logging.getLogger("bot.relay")

# Scanning a message for embedded JSON is bounded: error texts are short; a hostile one is not
# allowed to cost more than this many characters or parse attempts.
_SCAN_CHARS = 64_000
_SCAN_TRIES = 24
_DEPTH = 6

_PREFIX = re.compile(r"^\s*(?:(?:litellm\.)?[A-Za-z]*(?:Error|Exception|Timeout)\s*:\s*|[A-Za-z]+Exception\s*-\s*)+")
_SUFFIX = re.compile(r"\s*(?:\n\s*\n\s*LiteLLM:|\s*Received Model Group=|\s*LiteLLM Retried:|\s*No fallback model group found).*\Z", re.S)
_RETRY_DELAY = re.compile(r"""retryDelay["']?\s*[:=]\s*["']?(\d+(?:\.\d+)?)s""")
_RETRY_IN = re.compile(r"\bretry (?:in|after) (\d+(?:\.\d+)?)\s*(?:s|sec|seconds?)\b", re.I)


def _embedded(text: str) -> list[Any]:
    """JSON (or Python-repr) objects found inside ``text``, outermost first."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    scan = text[:_SCAN_CHARS]
    at, tries = scan.find("{"), 0
    while at >= 0 and tries < _SCAN_TRIES:
        tries += 1
        value: Any = None
        end = at + 1
        try:
            value, end = decoder.raw_decode(scan, at)
        except ValueError:
            close = scan.rfind("}")
            if scan.startswith("{'", at) and close > at:
                try:  # LiteLLM sometimes formats a provider dict with str(), not json.dumps
                    value, end = ast.literal_eval(scan[at : close + 1]), close + 1
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    value = None
        if isinstance(value, (dict, list)):
            found.append(value)
            at = scan.find("{", end)
        else:
            at = scan.find("{", at + 1)
    return found


def readable(info: ErrorInfo) -> ErrorInfo:
    """``info`` with the innermost provider message (nested JSON in strings unwrapped, gateway
    prefixes and suffixes cut) and any retry delay or reason found on the way."""
    current = info
    for _ in range(_DEPTH):
        inner = next((e for e in map(error_info, _embedded(current.message)) if e and e.message), None)
        if inner is None:
            break
        current = replace(
            inner,
            reason=inner.reason or current.reason,
            code=inner.code or current.code,
            retry_delay=inner.retry_delay if inner.retry_delay is not None else current.retry_delay,
            status_text=inner.status_text or current.status_text,
        )
    message = _SUFFIX.sub("", _PREFIX.sub("", current.message)).strip() or current.message.strip()
    delay = current.retry_delay if current.retry_delay is not None else info.retry_delay
    if delay is None:
        delay = delay_in_text(info.message)
    return replace(current, message=message, retry_delay=delay, status_text=current.status_text or info.status_text)


def delay_in_text(text: str) -> float | None:
    """Google's ``"retryDelay": "7s"`` or "Please retry in 7.5s." inside a message."""
    match = _RETRY_DELAY.search(text[:_SCAN_CHARS]) or _RETRY_IN.search(text[:_SCAN_CHARS])
    return float(match.group(1)) if match else None


def retry_after_seconds(headers: Mapping[str, str] | Any, now: float | None = None) -> float | None:
    """Seconds the answer's headers ask us to wait: ``retry-after-ms``, ``Retry-After``
    (delta-seconds or HTTP-date), or the same passed on by LiteLLM as ``llm_provider-...``."""
    lower = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    for prefix in ("", "llm_provider-"):
        ms = lower.get(prefix + "retry-after-ms")
        if ms:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
        value = (lower.get(prefix + "retry-after") or "").strip()
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None


def retry_hint(headers: Mapping[str, str] | Any | None, info: ErrorInfo) -> float | None:
    """The wait an error asks for: a header first, else a delay inside the (nested) message."""
    from_header = retry_after_seconds(headers) if headers is not None else None
    return from_header if from_header is not None else info.retry_delay


_REFUSAL_WORDS = re.compile(
    r"drop_params|not supported|unsupported|unrecognized request argument|unknown parameter|"
    r"not allowed|not permitted|extra (?:inputs|fields)|invalid (?:parameter|field)|unexpected (?:keyword|field|parameter)",
    re.I,
)


def refused_params(message: str, sent: Iterable[str]) -> list[str]:
    """The fields of ``sent`` that a 400 refuses as parameters the gateway does not take.

    A field counts only as a whole word (``format`` is not ``response_format``) in a message
    that refuses a parameter."""
    if not _REFUSAL_WORDS.search(message):
        return []
    return [name for name in sent if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", message)]


_JSON_WORDS = re.compile(
    r"\bjson\b|content[- ]type|\bmultipart\b|\bform(?:-data)?\b|\bparse\b|image is required|missing image|no image",
    re.I,
)


def wants_json_body(message: str, sent: Iterable[str] = ()) -> bool:
    """Whether a refused multipart edit asks for the body in another form (JSON, data URLs).

    Words count whole (the ``form`` in ``response_format`` is no such request), and a message
    that refuses one of the fields we sent is about that field, not the body's form."""
    if refused_params(message, sent):
        return False
    return bool(_JSON_WORDS.search(message.replace("response_format", "")))


# --- the gateway in front -------------------------------------------------------------------

_told: set[str] = set()
_told_lock = threading.Lock()


def is_litellm(headers: Mapping[str, str] | Any) -> bool:
    return any(str(k).lower().startswith("x-litellm-") for k in dict(headers))


def gateway_timeout(headers: Mapping[str, str] | Any) -> float | None:
    """LiteLLM's own time limit for this call (``x-litellm-timeout``), when it says."""
    value = {str(k).lower(): v for k, v in dict(headers).items()}.get("x-litellm-timeout")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def notice(relay_name: str, base_url: str, headers: Mapping[str, str] | Any, attempts: int) -> None:
    """Tell the operator once per relay that a LiteLLM gateway retries too."""
    if not is_litellm(headers):
        return
    key = f"{relay_name}\0{base_url}"
    with _told_lock:
        if key in _told:
            return
        _told.add(key)
    version = {str(k).lower(): v for k, v in dict(headers).items()}.get("x-litellm-version", "unknown version")
    log.warning(
        "relay %s is a LiteLLM gateway (%s); it retries failed upstream calls itself (num_retries, "
        "3 calls by default), so each of our %d attempts may cost several upstream calls. Set "
        "num_retries: 0 in its router_settings, or lower NB_RETRY_ATTEMPTS here.",
        relay_name,
        version,
        attempts,
    )
