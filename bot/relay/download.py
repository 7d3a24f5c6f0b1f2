"""Downloading the picture a relay answered with as a URL, through the URL guard.

Relay URLs expire within hours, so the picture is fetched at once. Redirects are followed by
hand so every hop passes a guard (an untrusted relay's own; for the operator's trusted relay
one that allows private addresses but never cloud-metadata ones), and the key only goes to
the relay's own origin.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin, urlsplit

import httpx

from . import images, inflate
from .call import Caller, time_left
from .failures import RETRY_STATUSES, Fail, broken, describe, network
from .gateway_errors import retry_after_seconds
from .redact import cut, redact
from .types import RelayConfig, RelayFailed, RelayTimeout

log = logging.getLogger("bot.relay")

MAX_REDIRECTS = 5


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


async def download(caller: Caller, relay: RelayConfig, url: str, timeout: float) -> bytes:
    """The picture at ``url`` (relative to the relay's base URL), retried like an answer."""
    failure: Fail | None = None
    for attempt in range(1, caller.max_attempts + 1):
        outcome = await _download_once(caller, relay, url, timeout)
        if isinstance(outcome, bytes):
            return outcome
        failure = outcome
        if not failure.retry or attempt == caller.max_attempts:
            break
        delay = caller.delay(attempt, failure.retry_after)
        log.warning("relay %s: picture download failed (%s); retrying in %.2f s", relay.name, failure.error, delay)
        await asyncio.sleep(delay)
    assert failure is not None
    raise failure.error


async def _download_once(caller: Caller, relay: RelayConfig, url: str, timeout: float) -> bytes | Fail:
    timeout = max(0.001, time_left(timeout))
    current = url
    guard, client = caller.picture_route(relay)
    for _ in range(MAX_REDIRECTS + 1):
        refusal = await caller.guard(relay, current, guard)  # every hop, metadata never
        if refusal:
            return refusal
        outcome = await _hop(caller, client, relay, current, timeout)
        if not isinstance(outcome, str):
            return outcome
        current = outcome
    detail = f"too many redirects downloading the picture from {redact(url, [relay.api_key])}"
    return Fail(RelayFailed(detail, relay_message=detail, key="error.download_failed"), retry=False)


async def _hop(caller: Caller, client: httpx.AsyncClient, relay: RelayConfig, current: str, timeout: float) -> bytes | Fail | str:
    """One GET of ``current``: the picture, a failure, or the address it redirects to."""
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    if _origin(current) == _origin(relay.base_url):
        params, headers = caller.credentials(relay)
    headers = {**headers, "Accept-Encoding": inflate.ACCEPT_ENCODING}
    shown = redact(current, [relay.api_key])
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET",
                current,
                params=params or None,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=30.0),
                follow_redirects=False,
            ) as response:
                log.info("relay %s: GET %s -> HTTP %d", relay.name, shown, response.status_code)
                if response.is_redirect and response.headers.get("location"):
                    return urljoin(current, response.headers["location"])
                if response.status_code >= 300:
                    return _status_failure(response, shown)
                data = b"".join([piece async for piece in inflate.body_pieces(response, caller.max_answer_bytes)])
                try:
                    images.identify(data)
                except ValueError as exc:
                    return Fail(broken(f"the picture at {shown} is not an image ({exc})"), retry=True)
                return data
    except inflate.TooBig:
        detail = f"the picture at {shown} exceeded {caller.max_answer_bytes // 2**20} MB"
        return Fail(RelayFailed(detail, relay_message=detail, key="error.answer_too_large"), retry=False)
    except (httpx.ReadTimeout, httpx.WriteTimeout, TimeoutError):
        detail = f"downloading the picture took more than {timeout:.0f} s"
        return Fail(RelayTimeout(detail, relay_message=detail, retryable=True, key="error.timeout"), retry=False)
    except (inflate.RefusedEncoding, httpx.DecodingError) as exc:
        detail = f"the picture at {shown} came in an encoding refused or broken ({describe(exc, relay)})"
        return Fail(RelayFailed(detail, relay_message=detail, retryable=True, key="error.answer_refused"), retry=False)
    except httpx.TransportError as exc:
        return Fail(network(f"downloading the picture failed: {describe(exc, relay)}"), retry=True)


def _status_failure(response: httpx.Response, shown: str) -> Fail:
    # The body is not shown: a relay could point the download at an internal address and
    # read what it answers through our messages.
    status = response.status_code
    retry = status in RETRY_STATUSES
    return Fail(
        RelayFailed(
            f"HTTP {status} downloading the picture from {cut(shown, 300)}",
            status=status,
            relay_message=f"HTTP {status}",
            retryable=True,
            key="error.download_failed",
        ),
        retry=retry,
        retry_after=retry_after_seconds(response.headers) if retry else None,
    )
