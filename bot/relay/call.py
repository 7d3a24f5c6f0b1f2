"""One bounded HTTP call to a relay: the attempt, its retries, and reading the answer.

Each attempt is bounded by its timeout (and the caller's deadline, see :data:`DEADLINE`); the
answer is read as a stream into :class:`~.stream.StreamDecoder` with ``afeed`` (never
``response.json()``: 4K answers are tens of MB), SSE answers through :class:`~.sse.EventStream`.
Read timeouts are never retried on the same relay: the relay took the whole allowance (up to
20 minutes at 4K) and may still be generating - and billing - the picture; sending it again
would double both the wait and the cost.

The key is passed to httpx apart from the URL that is logged, and failures are returned as
:class:`~.failures.Fail` values, raised outside ``except`` blocks, so no httpx exception
(whose text may hold the URL) rides along as ``__context__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx

from . import gate, gateway_errors, inflate
from .answer import AnswerError, BrokenAnswer
from .blob import Budget, DecodeError, RefusedAnswer
from .body import Sent
from .failures import ERROR_BODY_CAP, Fail, broken, describe, envelope_failure, http_failure, network, refused_answer
from .redact import redact
from .sse import ON_EVENT, EventStream
from .stream import StreamDecoder
from .types import RelayConfig, RelayFailed, RelayTimeout

log = logging.getLogger("bot.relay")

# httpcore reads a response 64 KiB at a time (AsyncHTTP11Connection.READ_NUM_BYTES), while
# asyncio's socket transport receives up to 256 KiB per read: every transport read was cut into
# up to four pieces, each going through anyio's timeout scope, h11's parser and httpx's
# iterators before our decoder saw it. One piece per transport read: CPU per 4K answer
# 0.13-0.145 s -> 0.10-0.12 s (python -m bench --clients ours --sizes 4K, 1/4/16 in flight,
# three alternating runs each, bench/results/2026-12-02-speed.md); the loop's busiest tick is
# unchanged, as our decoder slices big pieces itself (StreamDecoder.afeed). Process-wide: it
# applies to every httpx connection here (relays, picture downloads), and a read still returns
# only what has arrived.
READ_BYTES = 256 * 1024


def _read_whole_transport_reads() -> None:
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:  # httpcore reorganised: its own default stays
        return
    if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
        AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES


_read_whole_transport_reads()

# The caller's deadline for the whole call (a time.monotonic() instant), or None: every
# attempt and download gets at most the time left, so the caller's deadline ends an attempt
# by the attempt's own timeout (one timer, the connection closed in order) rather than by
# cancelling it from outside.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("relay_deadline", default=None)


def time_left(timeout: float) -> float:
    deadline = DEADLINE.get()
    return timeout if deadline is None else min(timeout, deadline - time.monotonic())


# Past these an answer's JSON structure is handled off the loop (see Caller._decode).
# A real answer, 4K picture included, is under 1,000 tokens and a few KB of skeleton.
HEAVY_TOKENS = 4_000
HEAVY_SKELETON = 128 * 2**10

USER_AGENT = "nano-banana-bot/0.1 (+relay client)"

UrlGuard = Callable[[str], Awaitable[None]]
T = TypeVar("T")


@runtime_checkable
class AddressGuard(Protocol):
    """A URL guard that also gives the addresses it vetted for a host (``urlguard.Guard``):
    connections then go to those addresses, not to a fresh lookup of the name."""

    def __call__(self, url: str) -> Awaitable[None]: ...

    async def addresses_for(self, host: str, port: int) -> list[str]: ...


class Caller:
    """The HTTP clients, URL guards and limits that every call to a relay goes through."""

    def __init__(
        self,
        http: httpx.AsyncClient | None = None,
        *,
        max_attempts: int = 4,
        backoff_base: float = 1.0,
        max_backoff: float = 60.0,
        body_budget: int = 20_000_000,
        max_answer_bytes: int = 256 * 2**20,
        url_guard: UrlGuard | None = None,
        timeout: float | None = None,
    ) -> None:
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": inflate.ACCEPT_ENCODING},
            timeout=httpx.Timeout(60.0),
        )
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = max(0.0, backoff_base)
        self.max_backoff = max(0.0, max_backoff)
        self.body_budget = body_budget
        self.max_answer_bytes = max_answer_bytes
        self.url_guard = url_guard
        self.timeout = timeout
        # Untrusted relays (and the pictures they point at) go through a transport that dials
        # the address the guard vetted, not the name (DNS rebinding): see relay/transport.py.
        self._guarded: httpx.AsyncClient | None = None
        if isinstance(url_guard, AddressGuard):
            self._guarded = pinned_client(url_guard)
        # Pictures the operator's own (trusted) relay points at: its answer may name any host,
        # so they pass a guard too, one that allows private addresses but never metadata ones.
        self._picture_guard: UrlGuard | None = None
        self._picture_client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()
        if self._guarded is not None:
            await self._guarded.aclose()
        if self._picture_client is not None:
            await self._picture_client.aclose()

    def client_for(self, relay: RelayConfig) -> httpx.AsyncClient:
        if relay.trusted or self._guarded is None:
            return self._http
        return self._guarded

    def picture_route(self, relay: RelayConfig) -> tuple[UrlGuard, httpx.AsyncClient]:
        """The guard and client for fetching a picture URL that ``relay`` answered with."""
        if not relay.trusted and self.url_guard is not None:
            return self.url_guard, self.client_for(relay)
        if self._picture_guard is None or self._picture_client is None:
            from ..urlguard import make_guard

            guard = make_guard(allow_private=True)
            self._picture_guard, self._picture_client = guard, pinned_client(guard)
        return self._picture_guard, self._picture_client

    def endpoint(self, relay: RelayConfig, path: str) -> str:
        base = relay.base_url.strip().rstrip("/")
        if relay.dialect == "gemini":
            # An operator may paste the OpenAI-style ".../v1" base; image generation lives
            # under v1beta (v1 lacks the image options), so that one is swapped.
            if base.endswith("/v1"):
                base = base[: -len("/v1")]
            if not re.search(r"/v1(?:alpha|beta)\d*$", base):
                base += "/v1beta"
        elif not re.search(r"/v1$", base):
            base += "/v1"
        return base + path

    @staticmethod
    def credentials(relay: RelayConfig) -> tuple[dict[str, str], dict[str, str]]:
        key = relay.api_key
        if not key:
            return {}, {}
        if relay.auth == "query":
            return {"key": key}, {}
        if relay.auth == "x-goog-api-key":
            return {}, {"x-goog-api-key": key}
        return {}, {"Authorization": f"Bearer {key}"}

    async def request(
        self,
        relay: RelayConfig,
        sent: Sent,
        *,
        timeout: float,
        parse: Callable[[Any], T],
        attempts: int | None = None,
    ) -> T:
        """``sent``, attempted until ``parse`` accepts the answer or the retry policy gives up
        (then the last failure is raised); ``parse`` gets the decoded JSON."""
        limit = attempts or self.max_attempts
        failure: Fail | None = None
        for attempt in range(1, limit + 1):
            outcome = await self._attempt(relay, sent, timeout=timeout, parse=parse)
            if not isinstance(outcome, Fail):
                return outcome
            failure = outcome
            most = min(limit, failure.tries or limit)
            if not failure.retry or attempt >= most:
                break
            delay = self.delay(attempt, failure.retry_after)
            if time_left(delay) < delay:
                break  # the caller's deadline comes first: no time for another attempt
            log.warning(
                "relay %s: %s; retrying in %.2f s (attempt %d of %d)",
                relay.name,
                failure.error,
                delay,
                attempt + 1,
                most,
            )
            await asyncio.sleep(delay)
        assert failure is not None
        error = failure.error
        made = min(limit, failure.tries or limit)
        if failure.retry and made > 1 and isinstance(error, RelayFailed):
            error.args = (f"{error} (after {made} attempts)",)
            error.params["attempts"] = made
        raise error

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        exp = self.backoff_base * (2 ** (attempt - 1))
        return min(self.max_backoff, exp) * random.uniform(0.75, 1.0)

    async def _attempt(self, relay: RelayConfig, sent: Sent, *, timeout: float, parse: Callable[[Any], T]) -> T | Fail:
        timeout = max(0.001, time_left(timeout))
        refusal = await self.guard(relay, sent.url)
        if refusal:
            return refusal
        params, auth_headers = self.credentials(relay)
        headers = {**(sent.headers or {}), **auth_headers, "Accept-Encoding": inflate.ACCEPT_ENCODING}
        limits = httpx.Timeout(connect=min(30.0, timeout), read=timeout, write=max(60.0, min(timeout, 300.0)), pool=30.0)
        shown = redact(sent.url, [relay.api_key])
        fail: Fail | None = None
        answering = False  # the status line has arrived: a cut from here on is a broken body
        try:
            async with asyncio.timeout(timeout):
                async with self.client_for(relay).stream(
                    sent.method,
                    # (httpx's params replace a URL's own query: merged here, keeping ?alt=sse)
                    httpx.URL(sent.url).copy_merge_params(params) if params else sent.url,
                    headers=headers,
                    content=sent.content,
                    data=sent.data,
                    files=sent.files,
                    timeout=limits,
                    follow_redirects=False,
                ) as response:
                    answering = True
                    log.info("relay %s: %s %s -> HTTP %d", relay.name, sent.method, shown, response.status_code)
                    gateway_errors.notice(relay.name, relay.base_url, response.headers, self.max_attempts)
                    if response.status_code >= 300:
                        body = await inflate.read_capped(response, ERROR_BODY_CAP)
                        fail = http_failure(relay, response, body)
                    else:
                        value, heavy = await self._decode(response)
                        if heavy:  # see _decode
                            return await asyncio.to_thread(parse, value)
                        return parse(value)
        except inflate.TooBig:
            detail = f"the answer exceeded {self.max_answer_bytes // 2**20} MB"
            fail = Fail(RelayFailed(f"the relay's {detail}", key="error.answer_too_large", relay_message=detail), retry=False)
        except (RefusedAnswer, inflate.RefusedEncoding) as exc:
            fail = Fail(refused_answer(relay, exc), retry=False)
        except (BrokenAnswer, DecodeError, httpx.DecodingError) as exc:
            fail = Fail(broken(redact(exc, [relay.api_key])), retry=True)
        except AnswerError as exc:
            fail = envelope_failure(relay, exc.info, status=None)
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            fail = Fail(network(f"could not connect to the relay within {min(30.0, timeout):.0f} s"), retry=True)
        except (httpx.ReadTimeout, httpx.WriteTimeout, TimeoutError):
            # With the status line in (a stream whose drafts may already show), the relay did
            # answer: it is the rest that did not come within the attempt's time.
            detail = f"the answer did not finish within {timeout:.0f} s" if answering else f"no answer within {timeout:.0f} s"
            fail = Fail(
                RelayTimeout(f"the relay gave {detail}", relay_message=detail, retryable=True, key="error.timeout"),
                retry=False,
            )
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            detail = describe(exc, relay)
            fail = Fail(broken(f"the connection broke off mid-answer ({detail})") if answering else network(detail), retry=True)
        except httpx.HTTPError as exc:
            fail = Fail(network(f"could not reach the relay: {describe(exc, relay)}"), retry=False)
        assert fail is not None
        return fail

    async def guard(self, relay: RelayConfig, url: str, guard: UrlGuard | None = None) -> Fail | None:
        """A refusal when ``url`` may not be reached: by ``guard``, else the client's own guard
        for untrusted relays (the operator's trusted relay passes unchecked)."""
        if guard is None:
            if relay.trusted or self.url_guard is None:
                return None
            guard = self.url_guard
        reason = ""
        try:
            await guard(url)
            return None
        except Exception as exc:  # the guard raises to refuse; its text says why
            reason = redact(exc, [relay.api_key]) or exc.__class__.__name__
        shown = redact(url, [relay.api_key])
        return Fail(
            RelayFailed(
                f"refused to connect to {shown}: {reason}",
                key="error.url_refused",
                relay_message=reason,
                retryable=False,
            ),
            retry=False,
        )

    async def _decode(self, response: httpx.Response) -> tuple[Any, bool]:
        """The answer as JSON, read as a stream (SSE answers become a list of events), and
        whether it is *heavy*: more structure than a real answer has (still under the
        decoder's bounds). A heavy answer is loaded and parsed in a worker thread: both are
        Python-level work that the interpreter preempts every few ms (sys.getswitchinterval)
        to let the loop run, where on the loop they would hold it for their whole length."""
        is_sse = "text/event-stream" in response.headers.get("content-type", "").lower()
        budget = Budget()
        decoder = StreamDecoder(budget=budget)
        on_event = ON_EVENT.get()
        sse: EventStream | None = EventStream(budget, on_event) if is_sse else None
        first = True
        received = 0
        async with contextlib.AsyncExitStack() as held:
            async for chunk in inflate.body_pieces(response, self.max_answer_bytes):
                if first and chunk.strip():
                    first = False
                    if sse is None and chunk.lstrip()[:5] in (b"data:", b"event"):
                        sse = EventStream(budget, on_event)  # a relay streaming although asked not to, without saying so
                if sse is not None:
                    await sse.feed(chunk)
                else:
                    await decoder.afeed(chunk)  # a big chunk in slices, yielding to the loop between
                if received < gate.AFTER <= received + len(chunk):
                    await held.enter_async_context(gate.slot())  # a big answer: see relay/gate.py
                received += len(chunk)
            heavy = budget.tokens > HEAVY_TOKENS or budget.skeleton > HEAVY_SKELETON
            close = sse.close if sse is not None else decoder.close
            return (await asyncio.to_thread(close) if heavy else close()), heavy


def pinned_client(guard: AddressGuard) -> httpx.AsyncClient:
    """A client that dials the addresses ``guard`` vetted (no DNS rebinding): relay/transport.py."""
    from .transport import PinnedTransport

    return httpx.AsyncClient(
        transport=PinnedTransport(guard),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": inflate.ACCEPT_ENCODING},
        timeout=httpx.Timeout(60.0),
    )


def api_root(url: str) -> str:
    """``https://gw/v1beta`` or ``https://gw/v1`` -> ``https://gw``: the relay's root, under which
    each dialect's version prefix (and an OpenAI-style ``/v1``) lives."""
    return re.sub(r"/v1(?:alpha|beta)?\d*$", "", url.strip().rstrip("/"))
