"""What a failed attempt means: the error to raise, and whether this relay is tried again.

The retry policy (documented for the failover layer in :mod:`.client`):
- Retried here with backoff: HTTP 429, 500, 502, 503, 504 (and Cloudflare's 520-524),
  connection failures and broken bodies; a gateway's own 408 once more.
- ``RelayFailed.retryable`` (another relay might succeed): 429, 5xx, network, timeouts, and
  this relay's own key or account trouble (401/402/403/404, API_KEY_INVALID).
Every message is redacted with the relay's key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx

from . import gateway_errors, inflate
from .answer import ErrorInfo, error_info, is_policy_refusal, no_image, text_of_html
from .gateway_errors import retry_hint
from .redact import cut, redact
from .types import RelayConfig, RelayError, RelayFailed, RelayTimeout

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# Failures that are about this relay (its key, account, model list), not about the request.
RELAY_SPECIFIC = frozenset({401, 402, 403, 404})
ERROR_BODY_CAP = 1 * 2**20
# Request fields that a picture can do without (a refusal naming one is answered by one
# resend without it): the answer's encoding, and size/ratio controls that the result check
# reports on when they are lost.
OPTIONAL_FIELDS = ("response_format", "aspect_ratio", "imageConfig", "image_config", "size", "quality", "style", "n")


@dataclass
class Fail:
    error: RelayError  # RelayFailed, or NoImage for an error status that is really a refusal
    retry: bool
    retry_after: float | None = None
    tries: int | None = None  # at most this many attempts for this failure (None: max_attempts)


def broken(detail: str) -> RelayFailed:
    return RelayFailed(
        f"the relay's answer was broken: {detail}",
        relay_message=detail,
        retryable=True,
        key="error.broken_answer",
    )


def refused_answer(relay: RelayConfig, exc: BaseException) -> RelayFailed:
    """An answer refused for its size, shape or encoding. Not retried on this relay (the same
    relay would send the same thing again); ``retryable`` lets the failover try another."""
    if isinstance(exc, inflate.RefusedEncoding):
        detail = f"it came with Content-Encoding {exc} (we take one layer of gzip or deflate)"
    else:
        detail = str(exc)
    detail = redact(detail, [relay.api_key])
    return RelayFailed(f"the relay's answer was refused: {detail}", relay_message=detail, retryable=True, key="error.answer_refused")


def network(detail: str) -> RelayFailed:
    return RelayFailed(detail, relay_message=detail, retryable=True, key="error.network")


def describe(exc: BaseException, relay: RelayConfig) -> str:
    text = str(exc) or exc.__class__.__name__
    return redact(f"{exc.__class__.__name__}: {text}" if str(exc) else text, [relay.api_key])


def http_failure(relay: RelayConfig, response: httpx.Response, body: bytes) -> Fail:
    """An answer with an error status (``body`` already capped at ERROR_BODY_CAP)."""
    status = response.status_code
    text = body.decode("utf-8", "replace")
    parsed: object = None
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    info = error_info(parsed) if parsed is not None else None
    if info is None:
        if "<html" in text[:2000].lower() or "<!doctype" in text[:200].lower():
            info = ErrorInfo(message=text_of_html(text))
        else:
            info = ErrorInfo(message=cut(re.sub(r"\s+", " ", text[:4096]).strip(), 500, [relay.api_key]))
    if 300 <= status < 400:
        target = cut(response.headers.get("location", ""), 300, [relay.api_key])
        return Fail(
            RelayFailed(
                f"HTTP {status}: the relay redirects to {target or 'another address'}; use that address as the relay URL",
                status=status,
                relay_message=f"redirect to {target}",
                key="error.redirect",
            ),
            retry=False,
        )
    return envelope_failure(relay, info, status=status, headers=response.headers)


def envelope_failure(relay: RelayConfig, info: ErrorInfo, *, status: int | None, headers: httpx.Headers | None = None) -> Fail:
    """An error the relay put into words: an error status's body, or an error envelope inside
    a 2xx answer (``status`` None)."""
    info = gateway_errors.readable(info)  # a gateway's wrapping taken off: the provider's words
    if status is None or status == 500:
        # An envelope inside a 2xx answer, or a catch-all 500 around the provider's own
        # error (LiteLLM answers a Google 503 as 500): the innermost code tells.
        status = info.code if info.code and 400 <= info.code < 600 else status
    message = cut(info.message or info.status_text or "", 1000, [relay.api_key])
    if status in (400, 422) and is_policy_refusal(info):
        detail = redact(info.reason or info.status_text or f"HTTP {status}", [relay.api_key])
        return Fail(no_image("blocked", detail, message), retry=False)
    shown = f"HTTP {status}" if status else "relay error"
    special = (
        _key_refused(info, status, shown, message)
        or _gateway_timeout(status, shown, message, headers)
        or _request_refused(status, shown, message)
    )
    if special is not None:
        return special
    retry = status in RETRY_STATUSES if status else info.status_text.upper() in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL")
    message = message or "no message"
    return Fail(
        RelayFailed(
            f"{shown}: {message}",
            status=status,
            relay_message=message,
            retryable=retry or (status in RELAY_SPECIFIC) or status is None or status >= 500,
            key="error.relay_http" if status else "error.relay_answer",
        ),
        retry=retry,
        retry_after=retry_hint(headers, info) if retry else None,
    )


def _key_refused(info: ErrorInfo, status: int | None, shown: str, message: str) -> Fail | None:
    lowered = message.lower()
    if not (
        (info.reason or "").upper() == "API_KEY_INVALID"
        or status in (401, 403)
        or "api key not valid" in lowered
        or "invalid api key" in lowered
    ):
        return None
    return Fail(
        RelayFailed(
            f"{shown}: the relay refused the API key: {message}",
            status=status,
            relay_message=message,
            retryable=True,
            key="error.auth",
        ),
        retry=False,
    )


def _gateway_timeout(status: int | None, shown: str, message: str, headers: httpx.Headers | None) -> Fail | None:
    """A gateway's own time limit (LiteLLM answers its Timeout as 408): the model may have been
    slow once, so one more attempt here, then another relay."""
    if status != 408:
        return None
    limit = gateway_errors.gateway_timeout(headers) if headers is not None else None
    return Fail(
        RelayTimeout(
            f"{shown}: the gateway in front of the relay stopped waiting"
            + (f" after {limit:.0f} s" if limit else "")
            + f" (its own time limit): {message}",
            status=status,
            relay_message=message,
            retryable=True,
            key="error.gateway_timeout",
        ),
        retry=True,
        tries=2,
    )


def _request_refused(status: int | None, shown: str, message: str) -> Fail | None:
    """Refusals of this request that no retry changes: optional fields named (the caller may
    resend once without them), or a body too large for the relay."""
    refused = gateway_errors.refused_params(message, OPTIONAL_FIELDS) if status in (400, 422) else []
    if refused:
        failure = RelayFailed(
            f"{shown}: the relay does not take the parameter {', '.join(refused)}: {message}",
            status=status,
            relay_message=message,
            key="error.param_refused",
        )
        failure.params["refused"] = refused
        return Fail(failure, retry=False)
    if status == 413:
        return Fail(
            RelayFailed(
                f"{shown}: the request is too large for this relay: {message}",
                status=status,
                relay_message=message,
                key="error.too_large",
            ),
            retry=False,
        )
    return None
