"""The relay client: one GenerationRequest in, one GenerationResult out, whatever the dialect.

Order of work for :meth:`RelayClient.generate`:
1. ``catalogue.validate`` - an InvalidRequest means nothing was sent.
2. Inputs identified by their bytes, converted or refused (``images.prepare``), and shrunk
   until the body fits ``body_budget``. Dialects without multi-turn get "latest picture +
   new instruction" instead of the history.
3. The dialect builds the request; the body is serialised once, in a worker thread, and
   reused by every attempt. History may hold :class:`~.stream.Blob` objects (a model turn
   reused as is, a replayed conversation): they are written as the base64 they stand for,
   slice by slice, and a big body is sent in pieces (see ``_Body``).
4. Attempts, each bounded by the size's timeout, reading the answer as a stream into
   ``StreamDecoder`` with ``afeed`` (never ``response.json()``: 4K answers are tens of MB);
   SSE answers feed each event's data into its own decoder as it arrives. Big base64 values
   stay :class:`~.stream.Blob` objects, in ``model_turn`` too (see ``GenerationResult``).
5. ``url`` answers are downloaded at once (through ``url_guard`` for untrusted relays).

Retry policy (decided here, documented for the failover layer):
- Retried with exponential backoff: HTTP 429, 500, 502, 503, 504 (and Cloudflare's 520-524),
  connection failures, connect timeouts, and broken bodies (cut off, not JSON, undecodable
  picture). ``Retry-After`` (seconds or HTTP date; ``retry-after-ms`` too) is honoured,
  capped by ``max_backoff``.
- Never retried: other 4xx, and *read* timeouts. A read timeout means the relay took the
  whole allowance (up to 20 minutes at 4K) and may still be generating - and billing -
  the picture; sending it again would double both the wait and the cost. It raises
  RelayTimeout(retryable=True) so a failover layer may try another relay instead.
- ``RelayFailed.retryable`` is True when another relay might succeed: 429, 5xx, network,
  timeouts, and this relay's own key or account trouble (401/402/403/404, API_KEY_INVALID).

Secrets: the key is registered with :mod:`redact`, passed to httpx separately from the URL
that is logged, and every message built here is redacted. Failures are raised outside
``except`` blocks so no httpx exception (whose text may hold the URL) rides along as
``__context__``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pybase64

from . import gateway_errors, gemini, images, inflate, openai_chat, openai_images
from .answer import MODEL_TEXT_CAP, AnswerError, BrokenAnswer, ErrorInfo, Parsed, error_info, is_policy_refusal, no_image, text_of_html
from .catalogue import DEFAULT_MODEL, dialect_notes, shape_notes, timeout_for, validate
from .gateway_errors import retry_after_seconds, retry_hint
from .redact import cut, redact, register_secret, relay_scope
from .stream import Blob, Budget, DecodeError, RefusedAnswer, StreamDecoder
from .types import (
    GenerationRequest,
    GenerationResult,
    InputImage,
    InvalidRequest,
    RelayConfig,
    RelayError,
    RelayFailed,
    RelayTimeout,
)

log = logging.getLogger("bot.relay")

# The caller's deadline for the whole call (a time.monotonic() instant), or None: every
# attempt and download gets at most the time left, so the caller's deadline ends an attempt
# by the attempt's own timeout (one timer, the connection closed in order) rather than by
# cancelling it from outside.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("relay_deadline", default=None)


def _time_left(timeout: float) -> float:
    deadline = _DEADLINE.get()
    return timeout if deadline is None else min(timeout, deadline - time.monotonic())


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# Failures that are about this relay (its key, account, model list), not about the request.
RELAY_SPECIFIC = frozenset({401, 402, 403, 404})
ERROR_BODY_CAP = 1 * 2**20
# History sent back per request (bot and CLI alike): the default 20 MB body budget less room for
# the new prompt and a new picture (which the client shrinks to fit). A real 4K turn is about
# 15-17 MB of JSON, so it still goes back whole.
HISTORY_BUDGET = 19_000_000
# Past these an answer's JSON structure is handled off the loop (see RelayClient._decode).
# A real answer, 4K picture included, is under 1,000 tokens and a few KB of skeleton.
HEAVY_TOKENS = 4_000
HEAVY_SKELETON = 128 * 2**10
PROBE_TIMEOUT = 30.0
# Model lists and balance answers are small; a relay answering megabytes there is broken.
SMALL_ANSWER_BYTES = 2 * 2**20
MAX_REDIRECTS = 5
USER_AGENT = "nano-banana-bot/0.1 (+relay client)"

UrlGuard = Callable[[str], Awaitable[None]]


_TooBig = inflate.TooBig


@dataclass
class _Fail:
    error: RelayError  # RelayFailed, or NoImage for an error status that is really a refusal
    retry: bool
    retry_after: float | None = None
    tries: int | None = None  # at most this many attempts for this failure (None: max_attempts)


@dataclass
class _Sent:
    """One prepared HTTP request, reusable across attempts."""

    method: str
    url: str
    content: bytes | _Body | None = None
    data: dict[str, str] | None = None
    files: list[Any] | None = None
    headers: dict[str, str] | None = None


def approx_json_size(value: Any) -> int:
    """About how many bytes ``value`` takes as JSON (without serialising 20 MB to find out)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, Blob):  # the base64 it stands for
        return 2 + sum(len(link.prefix) + 4 * ((len(link.data) + 2) // 3) + len(link._suffix) for link in value.links())
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 4 + approx_json_size(v) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(approx_json_size(v) + 1 for v in value)
    return len(str(value)) + 1


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class RelayClient:
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
        """``timeout`` overrides the per-size allowance from ``catalogue.timeout_for`` (tests, CLI)."""
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
        if url_guard is not None and hasattr(url_guard, "addresses_for"):
            self._guarded = _pinned_client(url_guard)
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

    def _client_for(self, relay: RelayConfig) -> httpx.AsyncClient:
        if relay.trusted or self._guarded is None:
            return self._http
        return self._guarded

    def _picture_route(self, relay: RelayConfig) -> tuple[UrlGuard, httpx.AsyncClient]:
        """The guard and client for fetching a picture URL that ``relay`` answered with."""
        if not relay.trusted and self.url_guard is not None:
            return self.url_guard, self._client_for(relay)
        if self._picture_guard is None or self._picture_client is None:
            from ..urlguard import make_guard

            guard = make_guard(allow_private=True)
            self._picture_guard, self._picture_client = guard, _pinned_client(guard)
        return self._picture_guard, self._picture_client

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public API ---------------------------------------------------------------------

    async def generate(self, relay: RelayConfig, request: GenerationRequest, *, deadline: float | None = None) -> GenerationResult:
        """``deadline``: a ``time.monotonic()`` instant by which the whole call ends, retries
        and the picture download included (the job deadline of bot/relay_pool.py)."""
        register_secret(relay.api_key)  # (a stored relay's: masked in log records)
        token = _DEADLINE.set(deadline)
        try:
            # Everything said about this request - errors, refusals, the model's text - is
            # redacted with this relay's key too (and the operator's, always).
            with relay_scope(relay.api_key):
                return await self._generate(relay, request)
        finally:
            _DEADLINE.reset(token)

    async def _generate(self, relay: RelayConfig, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        req = validate(request)
        relay_model = relay.model_aliases.get(req.model, req.model)

        history = list(req.history)
        inputs = list(req.images)
        if relay.dialect != "gemini" and history:
            # No multi-turn in the OpenAI dialects: the latest picture + the new instruction.
            if not inputs:
                latest = gemini.history_image(history)
                if latest is not None:
                    inputs = [latest]
            history = []
        req = replace(req, history=history, images=inputs)
        if relay.dialect == "openai-images" and len(inputs) > openai_images.MAX_EDIT_IMAGES:
            # The edits endpoint's own limit (seed 002: 1-6 pictures), tighter than the model's.
            raise InvalidRequest(
                f"the openai-images format takes at most {openai_images.MAX_EDIT_IMAGES} input images; got {len(inputs)}",
                key="invalid.too_many_images_dialect",
                dialect=relay.dialect,
                count=len(inputs),
                limit=openai_images.MAX_EDIT_IMAGES,
            )
        # Off the loop: identifying/shrinking inputs and base64-encoding them hold the GIL.
        prepared, user_turn = await asyncio.to_thread(self._prepare_inputs, req)
        timeout = self.timeout if self.timeout is not None else timeout_for(req.size)

        if relay.dialect == "gemini":
            parsed, user_turn = await self._generate_gemini(relay, req, relay_model, prepared, timeout, user_turn)
        elif relay.dialect == "openai-images":
            parsed = await self._generate_openai_images(relay, req, relay_model, prepared, timeout)
        elif relay.dialect == "openai-chat":

            async def chat(drop: tuple[str, ...]) -> Parsed:
                sent = await _post_json(self._endpoint(relay, openai_chat.PATH), openai_chat.build(req, relay_model, prepared, drop))
                return await self._request(relay, sent, timeout=timeout, parse=_checked(openai_chat.parse))

            parsed = await self._resending(relay, chat)
        else:  # pragma: no cover - RelayConfig.dialect is a Literal; settings validate it
            raise InvalidRequest(f"unknown relay format {relay.dialect!r}", key="invalid.dialect", value=relay.dialect)

        if parsed.image is None and parsed.image_url:
            url = urljoin(relay.base_url.rstrip("/") + "/", parsed.image_url)
            parsed.image = await self._download(relay, url, timeout)
        assert parsed.image is not None
        info = images.identify(parsed.image)  # checked already for inline answers; cheap
        return GenerationResult(
            image=parsed.image,
            mime_type=info.mime_type,
            width=info.width,
            height=info.height,
            model=req.model,
            text=cut(parsed.text, MODEL_TEXT_CAP),
            usage=parsed.usage,
            sources=parsed.sources,
            model_turn=parsed.model_turn if relay.dialect == "gemini" else None,
            user_turn=user_turn,
            elapsed_s=round(time.monotonic() - started, 3),
            relay_name=relay.name,
            # What the member asked that did not arrive: checked on the picture itself.
            notes=dialect_notes(req, relay.dialect) + shape_notes(req, info.width, info.height),
        )

    async def probe(self, relay: RelayConfig, model: str | None = None) -> float:
        """One cheap real call (a model list). Returns its latency in seconds; raises
        RelayFailed carrying the relay's own message.

        Gemini format: ``GET .../v1beta/models``; where that is not served (404/405: LiteLLM's
        Gemini route serves only POST ``:generateContent`` and friends under /v1beta), the
        model's own entry ``GET .../v1beta/models/{model}``, then the OpenAI-style list on the
        same root, ``GET .../v1/models`` (LiteLLM serves it with the same key)."""
        register_secret(relay.api_key)
        paths = ["/models"]
        if relay.dialect == "gemini":
            wanted = model or DEFAULT_MODEL
            paths.append(f"/models/{relay.model_aliases.get(wanted, wanted)}")
        urls = [self._endpoint(relay, path) for path in paths]
        if relay.dialect == "gemini":
            urls.append(_api_root(self._endpoint(relay, "")) + "/v1/models")
        started = time.monotonic()
        with relay_scope(relay.api_key):
            for i, url in enumerate(urls):
                try:
                    await self._request(relay, _Sent("GET", url), timeout=PROBE_TIMEOUT, parse=_probe_parse, attempts=1)
                    break
                except RelayFailed as exc:
                    if exc.status not in (404, 405) or i == len(urls) - 1:
                        raise
        return time.monotonic() - started

    def limited(self, *, max_attempts: int | None = None, max_answer_bytes: int | None = None) -> RelayClient:
        """A client sharing this one's HTTP client (connection pool, transport) and URL guard,
        with tighter limits: the relay probe and balance checks read small answers, once."""
        return RelayClient(
            self._http,
            max_attempts=self.max_attempts if max_attempts is None else max_attempts,
            backoff_base=self.backoff_base,
            max_backoff=self.max_backoff,
            body_budget=self.body_budget,
            max_answer_bytes=self.max_answer_bytes if max_answer_bytes is None else max_answer_bytes,
            url_guard=self.url_guard,
            timeout=self.timeout,
        )

    async def call_json(
        self,
        relay: RelayConfig,
        path: str,
        *,
        body: Any = None,
        versioned: bool = True,
        timeout: float = PROBE_TIMEOUT,
        max_bytes: int = SMALL_ANSWER_BYTES,
    ) -> Any:
        """One small JSON call, tried once: GET (``body`` None) or POST of ``body``. ``path``
        goes under the dialect's version prefix (``/v1beta`` or ``/v1``), or with
        ``versioned=False`` under the relay's root (its base URL without a trailing version),
        so the key only ever goes to the relay's own origin. The answer is bounded by
        ``timeout`` and ``max_bytes``; failures raise like :meth:`generate` (RelayFailed with
        ``key`` error.url_refused, error.auth, error.relay_http, error.broken_answer, ...)."""
        register_secret(relay.api_key)
        if versioned:
            url = self._endpoint(relay, path)
        else:
            url = _api_root(relay.base_url) + path
        sent = _Sent("GET", url) if body is None else await _post_json(url, body)
        small = self.limited(max_attempts=1, max_answer_bytes=max_bytes)
        with relay_scope(relay.api_key):
            return await small._request(relay, sent, timeout=timeout, parse=_probe_parse, attempts=1)

    # --- dialects -----------------------------------------------------------------------

    async def _generate_gemini(
        self,
        relay: RelayConfig,
        req: GenerationRequest,
        relay_model: str,
        prepared: list[InputImage],
        timeout: float,
        user_turn: dict[str, Any],
    ) -> tuple[Parsed, dict[str, Any]]:
        url = self._endpoint(relay, gemini.path(relay_model))
        size_wire = req.size
        body, turn = gemini.build(req, prepared, size_wire, turn=user_turn)
        sent = await _post_json(url, body)
        failure: RelayFailed | None = None
        try:
            return await self._request(relay, sent, timeout=timeout, parse=_checked(gemini.parse)), turn
        except RelayFailed as exc:
            # Any plain 400 (not a key problem): relays often answer Google's generic "Request
            # contains an invalid argument." without naming the field. A 400 is not billed.
            if not (size_wire == "512" and exc.status == 400 and exc.key != "error.auth"):
                raise
            failure = exc
        # Google's spelling is "512"; seed 001's relay documents "512px". Resend once.
        log.info("relay %s refused imageSize 512 (%s); resending as 512px", relay.name, failure.relay_message)
        body, turn = gemini.build(req, prepared, "512px", turn=user_turn)
        sent = await _post_json(url, body)
        return await self._request(relay, sent, timeout=timeout, parse=_checked(gemini.parse)), turn

    async def _generate_openai_images(
        self, relay: RelayConfig, req: GenerationRequest, relay_model: str, prepared: list[InputImage], timeout: float
    ) -> Parsed:
        async def attempt(drop: tuple[str, ...]) -> Parsed:
            if not prepared:
                body = openai_images.build_generation(req, relay_model, drop)
                sent = await _post_json(self._endpoint(relay, openai_images.GENERATIONS), body)
                return await self._request(relay, sent, timeout=timeout, parse=_checked(openai_images.parse))
            fields, files = openai_images.build_edit(req, relay_model, prepared, drop)
            url = self._endpoint(relay, openai_images.EDITS)
            failure: RelayFailed | None = None
            try:
                return await self._request(
                    relay, _Sent("POST", url, data=fields, files=files), timeout=timeout, parse=_checked(openai_images.parse)
                )
            except RelayFailed as exc:
                if not (
                    exc.status in (400, 415, 422)
                    and exc.key != "error.param_refused"
                    and gateway_errors.wants_json_body(exc.relay_message, fields)
                ):
                    raise
                failure = exc
            # Some relays take edits only as JSON with data-URL pictures (field notes §1).
            log.info("relay %s refused the multipart edit (%s); resending as JSON", relay.name, failure.relay_message)
            sent = await _post_json(url, openai_images.build_edit_json(req, relay_model, prepared, drop))
            return await self._request(relay, sent, timeout=timeout, parse=_checked(openai_images.parse))

        return await self._resending(relay, attempt)

    async def _resending(self, relay: RelayConfig, attempt: Callable[[tuple[str, ...]], Awaitable[Parsed]]) -> Parsed:
        """``attempt(drop=())``; when the relay refuses optional fields by name (a gateway's
        "not supported ... drop_params" 400, which costs nothing), once more without them."""
        failure: RelayFailed | None = None
        try:
            return await attempt(())
        except RelayFailed as exc:
            refused = tuple(exc.params.get("refused") or ())
            if exc.key != "error.param_refused" or not refused:
                raise
            failure = exc
        log.info("relay %s does not take %s (%s); resending once without it", relay.name, ", ".join(refused), failure.relay_message)
        return await attempt(refused)

    # --- inputs -------------------------------------------------------------------------

    def _prepare_inputs(self, req: GenerationRequest) -> tuple[list[InputImage], dict[str, Any]]:
        """The inputs, identified and fitted to the budget, and the user turn carrying them."""
        labels = [f"input image {i + 1}" for i in range(len(req.images))]
        prepared = [images.prepare(img.data, label) for img, label in zip(req.images, labels, strict=True)]
        fixed = approx_json_size(req.history) + len(req.prompt.encode("utf-8")) + 2_000
        if fixed > self.body_budget:
            raise InvalidRequest(
                f"the conversation history is too large to send (about {fixed / 1e6:.0f} MB; "
                f"the limit is about {self.body_budget / 1e6:.0f} MB); start a new conversation",
                key="invalid.history_too_large",
                size_mb=round(fixed / 1e6),
                limit_mb=round(self.body_budget / 1e6),
            )
        prepared = images.fit_budget(prepared, self.body_budget, fixed=fixed, labels=labels)
        return prepared, gemini.user_turn(req.prompt, prepared)

    # --- HTTP ---------------------------------------------------------------------------

    def _endpoint(self, relay: RelayConfig, path: str) -> str:
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
    def _auth(relay: RelayConfig) -> tuple[dict[str, str], dict[str, str]]:
        key = relay.api_key
        if not key:
            return {}, {}
        if relay.auth == "query":
            return {"key": key}, {}
        if relay.auth == "x-goog-api-key":
            return {}, {"x-goog-api-key": key}
        return {}, {"Authorization": f"Bearer {key}"}

    async def _request(
        self,
        relay: RelayConfig,
        sent: _Sent,
        *,
        timeout: float,
        parse: Callable[[Any], Any],
        attempts: int | None = None,
    ) -> Any:
        limit = attempts or self.max_attempts
        failure: _Fail | None = None
        for attempt in range(1, limit + 1):
            outcome = await self._attempt(relay, sent, timeout=timeout, parse=parse)
            if not isinstance(outcome, _Fail):
                return outcome
            failure = outcome
            most = min(limit, failure.tries or limit)
            if not failure.retry or attempt >= most:
                break
            delay = self._delay(attempt, failure.retry_after)
            if _time_left(delay) < delay:
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

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        exp = self.backoff_base * (2 ** (attempt - 1))
        return min(self.max_backoff, exp) * random.uniform(0.75, 1.0)

    async def _attempt(self, relay: RelayConfig, sent: _Sent, *, timeout: float, parse: Callable[[Any], Any]) -> Any:
        timeout = max(0.001, _time_left(timeout))
        refused = await self._guard(relay, sent.url)
        if refused:
            return refused
        params, auth_headers = self._auth(relay)
        headers = {**(sent.headers or {}), **auth_headers, "Accept-Encoding": inflate.ACCEPT_ENCODING}
        limits = httpx.Timeout(connect=min(30.0, timeout), read=timeout, write=max(60.0, min(timeout, 300.0)), pool=30.0)
        shown = redact(sent.url, [relay.api_key])
        fail: _Fail | None = None
        answering = False  # the status line has arrived: a cut from here on is a broken body
        try:
            async with asyncio.timeout(timeout):
                async with self._client_for(relay).stream(
                    sent.method,
                    sent.url,
                    params=params or None,
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
                        fail = self._http_failure(relay, response, body)
                    else:
                        value, heavy = await self._decode(response)
                        if heavy:  # see _decode
                            return await asyncio.to_thread(parse, value)
                        return parse(value)
        except _TooBig:
            detail = f"the answer exceeded {self.max_answer_bytes // 2**20} MB"
            fail = _Fail(RelayFailed(f"the relay's {detail}", key="error.answer_too_large", relay_message=detail), retry=False)
        except (RefusedAnswer, inflate.RefusedEncoding) as exc:
            fail = _Fail(_refused(relay, exc), retry=False)
        except (BrokenAnswer, DecodeError, httpx.DecodingError) as exc:
            fail = _Fail(_broken(redact(exc, [relay.api_key])), retry=True)
        except AnswerError as exc:
            fail = self._envelope_failure(relay, exc.info, status=None)
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            fail = _Fail(_network(f"could not connect to the relay within {min(30.0, timeout):.0f} s"), retry=True)
        except (httpx.ReadTimeout, httpx.WriteTimeout, TimeoutError):
            detail = f"no answer within {timeout:.0f} s"
            fail = _Fail(
                RelayTimeout(f"the relay gave {detail}", relay_message=detail, retryable=True, key="error.timeout"),
                retry=False,
            )
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            detail = _describe(exc, relay)
            fail = _Fail(_broken(f"the connection broke off mid-answer ({detail})") if answering else _network(detail), retry=True)
        except httpx.HTTPError as exc:
            fail = _Fail(_network(f"could not reach the relay: {_describe(exc, relay)}"), retry=False)
        assert fail is not None
        return fail

    async def _guard(self, relay: RelayConfig, url: str, guard: UrlGuard | None = None) -> _Fail | None:
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
        return _Fail(
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
        sse: _SSE | None = _SSE(budget) if is_sse else None
        first = True
        async for chunk in inflate.body_pieces(response, self.max_answer_bytes):
            if first and chunk.strip():
                first = False
                if sse is None and chunk.lstrip()[:5] in (b"data:", b"event"):
                    sse = _SSE(budget)  # a relay streaming although asked not to, without saying so
            if sse is not None:
                await sse.feed(chunk)
            else:
                await decoder.afeed(chunk)  # a big chunk in slices, yielding to the loop between
        heavy = budget.tokens > HEAVY_TOKENS or budget.skeleton > HEAVY_SKELETON
        close = sse.close if sse is not None else decoder.close
        return (await asyncio.to_thread(close) if heavy else close()), heavy

    def _http_failure(self, relay: RelayConfig, response: httpx.Response, body: bytes) -> _Fail:
        status = response.status_code
        text = body.decode("utf-8", "replace")
        parsed: Any = None
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
            return _Fail(
                RelayFailed(
                    f"HTTP {status}: the relay redirects to {target or 'another address'}; use that address as the relay URL",
                    status=status,
                    relay_message=f"redirect to {target}",
                    key="error.redirect",
                ),
                retry=False,
            )
        return self._envelope_failure(relay, info, status=status, headers=response.headers)

    def _envelope_failure(self, relay: RelayConfig, info: ErrorInfo, *, status: int | None, headers: httpx.Headers | None = None) -> _Fail:
        info = gateway_errors.readable(info)  # a gateway's wrapping taken off: the provider's words
        if status is None or status == 500:
            # An envelope inside a 2xx answer, or a catch-all 500 around the provider's own
            # error (LiteLLM answers a Google 503 as 500): the innermost code tells.
            status = info.code if info.code and 400 <= info.code < 600 else status
        message = cut(info.message or info.status_text or "", 1000, [relay.api_key])
        reason = (info.reason or "").upper()
        lowered = message.lower()
        if status in (400, 422) and is_policy_refusal(info):
            detail = redact(info.reason or info.status_text or f"HTTP {status}", [relay.api_key])
            return _Fail(no_image("blocked", detail, message), retry=False)
        shown = f"HTTP {status}" if status else "relay error"
        if reason == "API_KEY_INVALID" or status in (401, 403) or "api key not valid" in lowered or "invalid api key" in lowered:
            return _Fail(
                RelayFailed(
                    f"{shown}: the relay refused the API key: {message}",
                    status=status,
                    relay_message=message,
                    retryable=True,
                    key="error.auth",
                ),
                retry=False,
            )
        if status == 408:
            # A gateway's own time limit (LiteLLM answers its Timeout as 408): the model may
            # have been slow once, so one more attempt here, then another relay.
            limit = gateway_errors.gateway_timeout(headers) if headers is not None else None
            return _Fail(
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
        refused = gateway_errors.refused_params(message, _OPTIONAL_FIELDS) if status in (400, 422) else []
        if refused:
            failure = RelayFailed(
                f"{shown}: the relay does not take the parameter {', '.join(refused)}: {message}",
                status=status,
                relay_message=message,
                key="error.param_refused",
            )
            failure.params["refused"] = refused
            return _Fail(failure, retry=False)
        if status == 413:
            return _Fail(
                RelayFailed(
                    f"{shown}: the request is too large for this relay: {message}",
                    status=status,
                    relay_message=message,
                    key="error.too_large",
                ),
                retry=False,
            )
        retry = status in RETRY_STATUSES if status else info.status_text.upper() in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL")
        message = message or "no message"
        return _Fail(
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

    async def _download(self, relay: RelayConfig, url: str, timeout: float) -> bytes:
        """Fetch a hosted picture now (relay URLs expire within hours). Redirects are followed
        by hand so each hop passes the URL guard; the key only goes to the relay's own origin."""
        failure: _Fail | None = None
        for attempt in range(1, self.max_attempts + 1):
            outcome = await self._download_once(relay, url, timeout)
            if isinstance(outcome, bytes):
                return outcome
            failure = outcome
            if not failure.retry or attempt == self.max_attempts:
                break
            delay = self._delay(attempt, failure.retry_after)
            log.warning("relay %s: picture download failed (%s); retrying in %.2f s", relay.name, failure.error, delay)
            await asyncio.sleep(delay)
        assert failure is not None
        raise failure.error

    async def _download_once(self, relay: RelayConfig, url: str, timeout: float) -> bytes | _Fail:
        timeout = max(0.001, _time_left(timeout))
        current = url
        fail: _Fail | None = None
        guard, client = self._picture_route(relay)
        for _ in range(MAX_REDIRECTS + 1):
            refused = await self._guard(relay, current, guard)  # every hop, metadata never
            if refused:
                return refused
            params, headers = ({}, {})
            if _origin(current) == _origin(relay.base_url):
                params, headers = self._auth(relay)
            headers = {**headers, "Accept-Encoding": inflate.ACCEPT_ENCODING}
            shown = redact(current, [relay.api_key])
            location = None
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
                            location = urljoin(current, response.headers["location"])
                        elif response.status_code >= 300:
                            # The body is not shown: a relay could point the download at an
                            # internal address and read what it answers through our messages.
                            status = response.status_code
                            message = f"HTTP {status}"
                            fail = _Fail(
                                RelayFailed(
                                    f"HTTP {status} downloading the picture from {cut(shown, 300)}",
                                    status=status,
                                    relay_message=message,
                                    retryable=True,
                                    key="error.download_failed",
                                ),
                                retry=status in RETRY_STATUSES,
                                retry_after=retry_after_seconds(response.headers) if status in RETRY_STATUSES else None,
                            )
                        else:
                            chunks = [piece async for piece in inflate.body_pieces(response, self.max_answer_bytes)]
                            data = b"".join(chunks)
                            try:
                                images.identify(data)
                            except ValueError as exc:
                                fail = _Fail(_broken(f"the picture at {shown} is not an image ({exc})"), retry=True)
                            else:
                                return data
            except _TooBig:
                detail = f"the picture at {shown} exceeded {self.max_answer_bytes // 2**20} MB"
                return _Fail(RelayFailed(detail, relay_message=detail, key="error.answer_too_large"), retry=False)
            except (httpx.ReadTimeout, httpx.WriteTimeout, TimeoutError):
                detail = f"downloading the picture took more than {timeout:.0f} s"
                return _Fail(RelayTimeout(detail, relay_message=detail, retryable=True, key="error.timeout"), retry=False)
            except (inflate.RefusedEncoding, httpx.DecodingError) as exc:
                detail = f"the picture at {shown} came in an encoding refused or broken ({_describe(exc, relay)})"
                return _Fail(RelayFailed(detail, relay_message=detail, retryable=True, key="error.answer_refused"), retry=False)
            except httpx.TransportError as exc:
                fail = _Fail(_network(f"downloading the picture failed: {_describe(exc, relay)}"), retry=True)
            if fail is not None:
                return fail
            if location is None:
                break
            current = location
        detail = f"too many redirects downloading the picture from {redact(url, [relay.api_key])}"
        return _Fail(RelayFailed(detail, relay_message=detail, key="error.download_failed"), retry=False)


# --- helpers --------------------------------------------------------------------------------


def _pinned_client(guard: UrlGuard) -> httpx.AsyncClient:
    """A client that dials the addresses ``guard`` vetted (no DNS rebinding): relay/transport.py."""
    from .transport import PinnedTransport

    return httpx.AsyncClient(
        transport=PinnedTransport(guard),  # type: ignore[arg-type]
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": inflate.ACCEPT_ENCODING},
        timeout=httpx.Timeout(60.0),
    )


_JSON = {"Content-Type": "application/json"}
# Request fields that a picture can do without (a refusal naming one is answered by one
# resend without it): the answer's encoding, and size/ratio controls that the result check
# reports on when they are lost.
_OPTIONAL_FIELDS = ("response_format", "aspect_ratio", "imageConfig", "image_config", "size", "quality", "style", "n")


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Strings longer than this many characters, and every Blob, are written into the body slice
# by slice, each slice its own piece (Blob data: _B64_PIECE bytes, i.e. _PIECE base64 chars).
_PIECE = 2**19
_B64_PIECE = 3 * 2**17
# The bytes json.dumps(ensure_ascii=False) writes unchanged: all but '"', '\\' and controls.
_NO_ESCAPE = bytes(range(0x20, 0x100)).replace(b'"', b"").replace(b"\\", b"")


class _Body:
    """A JSON request body in pieces of at most ~0.5 MB, sent with its Content-Length.

    Why pieces: a 4K picture in the history makes a 35 MB body. Building it in one go
    (``json.dumps`` + ``encode``) held the GIL for ~120 ms, and joining it alone takes ~20 ms
    (one C call, page faults included); then asyncio's transport copies whatever the socket
    does not take at once - most of it - in one more call. Piece by piece, each step is under
    a millisecond. Iterating it again starts over, so every attempt can resend it.
    """

    __slots__ = ("pieces", "length")

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.length = sum(len(piece) for piece in pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _json_body(body: Any) -> bytes | _Body:
    """``body`` as the JSON ``_dump`` writes, byte for byte, with each :class:`Blob` written as
    the string it stands for. Small bodies come back as bytes; a body holding big strings or
    Blobs as a :class:`_Body`, made slice by slice so that, run in a worker thread, it lets
    the event loop take the GIL between slices."""
    bigs: list[str | Blob] = []
    marker = f"\ue000{secrets.token_hex(8)}:"
    head = _dump(_swap_big(body, bigs, marker))
    if not bigs:
        return head
    holes = re.compile(b'"' + re.escape(marker.encode()) + rb"(\d+)" + re.escape("\ue001".encode()) + b'"')
    pieces: list[bytes] = []
    for i, text in enumerate(holes.split(head)):
        if i % 2 == 0:
            if text:
                pieces.append(text)
            continue
        big = bigs[int(text)]
        pieces.append(b'"')
        if isinstance(big, Blob):
            for link in big.links():
                _str_pieces(link.prefix, pieces)
                view = memoryview(link.data)
                pieces += (pybase64.b64encode(view[at : at + _B64_PIECE]) for at in range(0, len(view), _B64_PIECE))
                _str_pieces(link._suffix, pieces)  # the link's own text (the next link's is its prefix)
        else:
            _str_pieces(big, pieces)
        pieces.append(b'"')
    return _Body(pieces)


def _swap_big(value: Any, bigs: list[str | Blob], marker: str) -> Any:
    """A copy of ``value`` with every Blob and big string replaced by a numbered marker."""
    if isinstance(value, Blob) or (isinstance(value, str) and len(value) > _PIECE):
        bigs.append(value)
        return f"{marker}{len(bigs) - 1}\ue001"
    if isinstance(value, dict):
        return {k: _swap_big(v, bigs, marker) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_swap_big(v, bigs, marker) for v in value]
    return value


def _str_pieces(text: str, out: list[bytes]) -> None:
    """The inside of ``text``'s JSON string, as json.dumps writes it, in slices."""
    for at in range(0, len(text), _PIECE):
        part = text[at : at + _PIECE]
        raw = part.encode("utf-8")
        if raw.translate(None, _NO_ESCAPE):  # a quote, backslash or control char: json escapes it
            raw = json.dumps(part, ensure_ascii=False)[1:-1].encode("utf-8")
        out.append(raw)


async def _post_json(url: str, body: Any) -> _Sent:
    content = await asyncio.to_thread(_json_body, body)
    headers = dict(_JSON)
    if isinstance(content, _Body):
        headers["Content-Length"] = str(content.length)  # else httpx would send it chunked
    return _Sent("POST", url, content=content, headers=headers)


def _api_root(url: str) -> str:
    """``https://gw/v1beta`` or ``https://gw/v1`` -> ``https://gw``: the relay's root, under which
    each dialect's version prefix (and an OpenAI-style ``/v1``) lives."""
    return re.sub(r"/v1(?:alpha|beta)?\d*$", "", url.strip().rstrip("/"))


def _broken(detail: str) -> RelayFailed:
    return RelayFailed(
        f"the relay's answer was broken: {detail}",
        relay_message=detail,
        retryable=True,
        key="error.broken_answer",
    )


def _refused(relay: RelayConfig, exc: BaseException) -> RelayFailed:
    """An answer refused for its size, shape or encoding. Not retried on this relay (the same
    relay would send the same thing again); ``retryable`` lets the failover try another."""
    if isinstance(exc, inflate.RefusedEncoding):
        detail = f"it came with Content-Encoding {exc} (we take one layer of gzip or deflate)"
    else:
        detail = str(exc)
    detail = redact(detail, [relay.api_key])
    return RelayFailed(f"the relay's answer was refused: {detail}", relay_message=detail, retryable=True, key="error.answer_refused")


def _network(detail: str) -> RelayFailed:
    return RelayFailed(detail, relay_message=detail, retryable=True, key="error.network")


def _describe(exc: BaseException, relay: RelayConfig) -> str:
    text = str(exc) or exc.__class__.__name__
    return redact(f"{exc.__class__.__name__}: {text}" if str(exc) else text, [relay.api_key])


def _checked(parse: Callable[[Any], Parsed]) -> Callable[[Any], Parsed]:
    """The dialect parser, plus: an inline picture must really be a picture (else the body was
    broken and the attempt is repeated); its true mime type wins over the claimed one."""

    def run(value: Any) -> Parsed:
        try:
            parsed = parse(value)
        except (RelayError, BrokenAnswer, AnswerError, DecodeError, RefusedAnswer):
            raise
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            # A shape no relay should send (e.g. a list where an object belongs).
            raise BrokenAnswer(f"unexpected answer shape ({exc.__class__.__name__}: {exc})") from None
        if parsed.image is not None:
            try:
                info = images.identify(parsed.image)
            except ValueError as exc:
                raise BrokenAnswer(f"the picture in the answer is not an image ({exc})") from None
            parsed.mime_type = info.mime_type
        return parsed

    return run


def _probe_parse(value: Any) -> Any:
    info = error_info(value)
    if info and isinstance(value, dict) and "error" in value:
        raise AnswerError(info)
    return value


_LINE_HEAD, _LINE_DATA, _LINE_SKIP = 0, 1, 2
_DONE = b"[DONE]"


class _SSE:
    """Server-sent events, each event's ``data:`` payload fed into its own StreamDecoder as it
    arrives.

    The framing is read in one pass: every byte is looked at once however the stream is cut,
    and a data line (35 MB for a 4K picture) is never held whole. Same rules as reading whole
    lines: lines end at "\\n" (a "\\r" before it is dropped), an empty line ends an event,
    only ``data:`` lines count (spaces after the colon skipped), an event's data lines are
    joined with "\\n", and a ``[DONE]`` payload is no event.
    """

    def __init__(self, budget: Budget | None = None) -> None:
        # One budget for the whole stream: every event's decoder and every line draw on it.
        self.budget = budget if budget is not None else Budget()
        self.events: list[Any] = []
        self._mode = _LINE_HEAD
        self._head = b""  # the start of the line, until it is known to be a data line or not
        self._blank = True  # another line: only "\r" so far (so it is an empty line)
        self._lead = True  # a data line: still skipping the spaces after "data:"
        self._crs = b""  # a data line: trailing "\r" held back; dropped if the line ends there
        self._lines = 0  # data lines in this event
        self._early = bytearray()  # the event's data while it could still be "[DONE]"
        self._look_at = 64
        self._decoder: StreamDecoder | None = None

    async def feed(self, chunk: bytes) -> None:
        pos, end = 0, len(chunk)
        lines = 0
        while pos < end:
            newline = chunk.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if stop > pos:
                await self._text(chunk[pos:stop] if pos or stop < end else chunk)
            if newline < 0:
                break
            self._end_line()
            pos = newline + 1
            lines += 1
            if lines == 256:  # a chunk of tiny lines: charge them and let the loop run
                self.budget.charge(0, lines)
                lines = 0
                await asyncio.sleep(0)
        self.budget.charge(0, lines)

    async def _text(self, seg: bytes) -> None:
        """More of the current line (no newline in ``seg``)."""
        if self._mode == _LINE_HEAD:
            need = 5 - len(self._head)
            self._head += seg[:need]
            seg = seg[need:]
            if len(self._head) < 5:
                return
            if self._head == b"data:":
                self._mode = _LINE_DATA
                if self._lines:
                    await self._payload(b"\n")
                self._lines += 1
                self._lead, self._crs = True, b""
            else:
                self._mode = _LINE_SKIP
                self._blank = not self._head.strip(b"\r")
            if not seg:
                return
        if self._mode == _LINE_DATA:
            if self._lead:
                seg = seg.lstrip(b" ")
                if not seg:
                    return
                self._lead = False
            body = seg.rstrip(b"\r")
            if not body:
                self._crs += seg
                return
            if self._crs:  # "\r" inside the line: part of the data
                await self._payload(self._crs)
            await self._payload(body)
            self._crs = seg[len(body) :]
        elif self._blank and seg.strip(b"\r"):
            self._blank = False

    def _end_line(self) -> None:
        mode, head, blank = self._mode, self._head, self._blank
        self._mode, self._head, self._crs, self._blank = _LINE_HEAD, b"", b"", True
        if (mode == _LINE_HEAD and not head.rstrip(b"\r")) or (mode == _LINE_SKIP and blank):
            self._dispatch()

    async def _payload(self, data: bytes) -> None:
        if self._decoder is None:
            self._early += data
            if len(self._early) > self.budget.max_skeleton:
                raise RefusedAnswer("an event of the stream holds nothing but blank data")
            if len(self._early) < self._look_at:
                return
            self._look_at = 2 * len(self._early)  # look again after doubling: linear overall
            if _DONE.startswith(bytes(self._early).strip()):
                return  # only whitespace (and maybe "[DONE]") so far
            self._decoder = StreamDecoder(budget=self.budget)
            data, self._early = bytes(self._early), bytearray()
        await self._decoder.afeed(data)

    def _dispatch(self) -> None:
        if not self._lines:
            return
        decoder, early = self._decoder, bytes(self._early)
        self._lines, self._decoder, self._early, self._look_at = 0, None, bytearray(), 64
        if decoder is None:
            if early.strip() == _DONE:
                return
            decoder = StreamDecoder(budget=self.budget)
            decoder.feed(early)
        self.events.append(decoder.close())

    def close(self) -> list[Any]:
        if self._mode != _LINE_HEAD or self._head:  # a last line without its newline
            self._end_line()
        self._dispatch()
        if not self.events:
            raise DecodeError("the event stream held no data")
        return self.events
