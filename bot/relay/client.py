"""The relay client: one GenerationRequest in, one GenerationResult out, whatever the dialect.

Order of work for :meth:`RelayClient.generate`:
1. ``catalogue.validate`` - an InvalidRequest means nothing was sent.
2. Inputs identified by their bytes, converted or refused (``images.prepare``), and shrunk
   until the body fits ``body_budget``. Dialects without multi-turn get "latest picture +
   new instruction" instead of the history.
3. The dialect builds the request; the body is serialised once and reused by every attempt.
4. Attempts, each bounded by the size's timeout, reading the answer as a stream into
   ``StreamDecoder`` (never ``response.json()``: 4K answers are tens of MB, and issue 5 swaps
   in an incremental decoder behind the same interface).
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
import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import httpx

from . import gemini, images, openai_chat, openai_images
from .answer import AnswerError, BrokenAnswer, ErrorInfo, Parsed, error_info, is_policy_refusal, no_image, text_of_html
from .catalogue import timeout_for, validate
from .redact import redact, register_secret
from .stream import DecodeError, StreamDecoder
from .types import (
    RelayError,
    GenerationRequest,
    GenerationResult,
    InputImage,
    InvalidRequest,
    RelayConfig,
    RelayFailed,
    RelayTimeout,
)

log = logging.getLogger("bot.relay")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# Failures that are about this relay (its key, account, model list), not about the request.
RELAY_SPECIFIC = frozenset({401, 402, 403, 404})
ERROR_BODY_CAP = 1 * 2**20
PROBE_TIMEOUT = 30.0
MAX_REDIRECTS = 5
USER_AGENT = "nano-banana-bot/0.1 (+relay client)"

UrlGuard = Callable[[str], Awaitable[None]]


class _TooBig(Exception):
    pass


@dataclass
class _Fail:
    error: RelayError  # RelayFailed, or NoImage for an error status that is really a refusal
    retry: bool
    retry_after: float | None = None


@dataclass
class _Sent:
    """One prepared HTTP request, reusable across attempts."""

    method: str
    url: str
    content: bytes | None = None
    data: dict[str, str] | None = None
    files: list[Any] | None = None
    headers: dict[str, str] | None = None


def retry_after_seconds(headers: httpx.Headers | dict[str, str], now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` (delta-seconds or HTTP-date) or ``retry-after-ms`` asks for."""
    lower = {k.lower(): v for k, v in dict(headers).items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = (lower.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def approx_json_size(value: Any) -> int:
    """About how many bytes ``value`` takes as JSON (without serialising 20 MB to find out)."""
    if isinstance(value, str):
        return len(value) + 2
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
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(60.0),
        )
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = max(0.0, backoff_base)
        self.max_backoff = max(0.0, max_backoff)
        self.body_budget = body_budget
        self.max_answer_bytes = max_answer_bytes
        self.url_guard = url_guard
        self.timeout = timeout

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "RelayClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public API ---------------------------------------------------------------------

    async def generate(self, relay: RelayConfig, request: GenerationRequest) -> GenerationResult:
        register_secret(relay.api_key)
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
        prepared = await asyncio.to_thread(self._prepare_inputs, req)
        timeout = self.timeout if self.timeout is not None else timeout_for(req.size)

        user_turn = gemini.user_turn(req.prompt, prepared)
        if relay.dialect == "gemini":
            parsed, user_turn = await self._generate_gemini(relay, req, relay_model, prepared, timeout)
        elif relay.dialect == "openai-images":
            parsed = await self._generate_openai_images(relay, req, relay_model, prepared, timeout)
        elif relay.dialect == "openai-chat":
            body = openai_chat.build(req, relay_model, prepared)
            sent = _Sent("POST", self._endpoint(relay, openai_chat.PATH), content=_dump(body), headers=_JSON)
            parsed = await self._request(relay, sent, timeout=timeout, parse=_checked(openai_chat.parse))
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
            text=parsed.text,
            usage=parsed.usage,
            sources=parsed.sources,
            model_turn=parsed.model_turn if relay.dialect == "gemini" else None,
            user_turn=user_turn,
            elapsed_s=round(time.monotonic() - started, 3),
            relay_name=relay.name,
        )

    async def probe(self, relay: RelayConfig) -> float:
        """One cheap real call (the model list). Returns its latency in seconds; raises
        RelayFailed carrying the relay's own message."""
        register_secret(relay.api_key)
        sent = _Sent("GET", self._endpoint(relay, "/models"))
        started = time.monotonic()
        await self._request(relay, sent, timeout=PROBE_TIMEOUT, parse=_probe_parse, attempts=1)
        return time.monotonic() - started

    # --- dialects -----------------------------------------------------------------------

    async def _generate_gemini(
        self, relay: RelayConfig, req: GenerationRequest, relay_model: str, prepared: list[InputImage], timeout: float
    ) -> tuple[Parsed, dict[str, Any]]:
        url = self._endpoint(relay, gemini.path(relay_model))
        size_wire = req.size
        body, turn = gemini.build(req, prepared, size_wire)
        sent = _Sent("POST", url, content=_dump(body), headers=_JSON)
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
        body, turn = gemini.build(req, prepared, "512px")
        sent = _Sent("POST", url, content=_dump(body), headers=_JSON)
        return await self._request(relay, sent, timeout=timeout, parse=_checked(gemini.parse)), turn

    async def _generate_openai_images(
        self, relay: RelayConfig, req: GenerationRequest, relay_model: str, prepared: list[InputImage], timeout: float
    ) -> Parsed:
        if prepared:
            fields, files = openai_images.build_edit(req, relay_model, prepared)
            url = self._endpoint(relay, openai_images.EDITS)
            sent = _Sent("POST", url, data=fields, files=files)
            failure: RelayFailed | None = None
            try:
                return await self._request(relay, sent, timeout=timeout, parse=_checked(openai_images.parse))
            except RelayFailed as exc:
                if not (exc.status in (400, 415, 422) and _wants_json(exc.relay_message)):
                    raise
                failure = exc
            # Some relays take edits only as JSON with data-URL pictures (field notes §1).
            log.info("relay %s refused the multipart edit (%s); resending as JSON", relay.name, failure.relay_message)
            body = openai_images.build_edit_json(req, relay_model, prepared)
            sent = _Sent("POST", url, content=_dump(body), headers=_JSON)
        else:
            body = openai_images.build_generation(req, relay_model)
            sent = _Sent("POST", self._endpoint(relay, openai_images.GENERATIONS), content=_dump(body), headers=_JSON)
        return await self._request(relay, sent, timeout=timeout, parse=_checked(openai_images.parse))

    # --- inputs -------------------------------------------------------------------------

    def _prepare_inputs(self, req: GenerationRequest) -> list[InputImage]:
        labels = [f"input image {i + 1}" for i in range(len(req.images))]
        prepared = [images.prepare(img.data, label) for img, label in zip(req.images, labels)]
        fixed = approx_json_size(req.history) + len(req.prompt.encode("utf-8")) + 2_000
        if fixed > self.body_budget:
            raise InvalidRequest(
                f"the conversation history is too large to send (about {fixed / 1e6:.0f} MB; "
                f"the limit is about {self.body_budget / 1e6:.0f} MB); start a new conversation",
                key="invalid.history_too_large",
                size_mb=round(fixed / 1e6),
                limit_mb=round(self.body_budget / 1e6),
            )
        return images.fit_budget(prepared, self.body_budget, fixed=fixed, labels=labels)

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
            if not failure.retry or attempt == limit:
                break
            delay = self._delay(attempt, failure.retry_after)
            log.warning(
                "relay %s: %s; retrying in %.2f s (attempt %d of %d)",
                relay.name, failure.error, delay, attempt + 1, limit,
            )
            await asyncio.sleep(delay)
        assert failure is not None
        error = failure.error
        if failure.retry and limit > 1 and isinstance(error, RelayFailed):
            error.args = (f"{error} (after {limit} attempts)",)
            error.params["attempts"] = limit
        raise error

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        exp = self.backoff_base * (2 ** (attempt - 1))
        return min(self.max_backoff, exp) * random.uniform(0.75, 1.0)

    async def _attempt(self, relay: RelayConfig, sent: _Sent, *, timeout: float, parse: Callable[[Any], Any]) -> Any:
        refused = await self._guard(relay, sent.url)
        if refused:
            return refused
        params, auth_headers = self._auth(relay)
        headers = {**(sent.headers or {}), **auth_headers}
        limits = httpx.Timeout(connect=min(30.0, timeout), read=timeout, write=max(60.0, min(timeout, 300.0)), pool=30.0)
        shown = redact(sent.url, [relay.api_key])
        fail: _Fail | None = None
        answering = False  # the status line has arrived: a cut from here on is a broken body
        try:
            async with asyncio.timeout(timeout):
                async with self._http.stream(
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
                    if response.status_code >= 300:
                        body = await self._read_capped(response, ERROR_BODY_CAP)
                        fail = self._http_failure(relay, response, body)
                    else:
                        value = await self._decode(response)
                        return parse(value)
        except _TooBig:
            detail = f"the answer exceeded {self.max_answer_bytes // 2**20} MB"
            fail = _Fail(RelayFailed(f"the relay's {detail}", key="error.answer_too_large", relay_message=detail), retry=False)
        except (BrokenAnswer, DecodeError) as exc:
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

    async def _guard(self, relay: RelayConfig, url: str) -> _Fail | None:
        if relay.trusted or self.url_guard is None:
            return None
        reason = ""
        try:
            await self.url_guard(url)
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

    async def _read_capped(self, response: httpx.Response, cap: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            room = cap - total
            if room <= 0:
                break
            chunks.append(chunk[:room])
            total += len(chunk[:room])
        return b"".join(chunks)

    async def _decode(self, response: httpx.Response) -> Any:
        """The answer as JSON, read as a stream. SSE answers become a list of events."""
        is_sse = "text/event-stream" in response.headers.get("content-type", "").lower()
        decoder = StreamDecoder()
        sse: _SSE | None = _SSE() if is_sse else None
        total = 0
        first = True
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > self.max_answer_bytes:
                raise _TooBig()
            if first and chunk.strip():
                first = False
                if sse is None and chunk.lstrip()[:5] in (b"data:", b"event"):
                    sse = _SSE()  # a relay streaming although asked not to, without saying so
            if sse is not None:
                sse.feed(chunk)
            else:
                decoder.feed(chunk)
        if sse is not None:
            return sse.close()
        return decoder.close()

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
                info = ErrorInfo(message=re.sub(r"\s+", " ", text).strip()[:500])
        if 300 <= status < 400:
            target = redact(response.headers.get("location", ""), [relay.api_key])
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

    def _envelope_failure(
        self, relay: RelayConfig, info: ErrorInfo, *, status: int | None, headers: httpx.Headers | None = None
    ) -> _Fail:
        if status is None:  # an error envelope inside a 2xx answer: its own code tells
            status = info.code if info.code and 400 <= info.code < 600 else None
        message = redact(info.message or info.status_text or "", [relay.api_key])[:1000]
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
            retry_after=_retry_hint(headers, info) if retry else None,
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
        current = url
        fail: _Fail | None = None
        for _ in range(MAX_REDIRECTS + 1):
            refused = await self._guard(relay, current)
            if refused:
                return refused
            params, headers = ({}, {})
            if _origin(current) == _origin(relay.base_url):
                params, headers = self._auth(relay)
            shown = redact(current, [relay.api_key])
            location = None
            try:
                async with asyncio.timeout(timeout):
                    async with self._http.stream(
                        "GET", current, params=params or None, headers=headers, timeout=httpx.Timeout(timeout, connect=30.0), follow_redirects=False
                    ) as response:
                        log.info("relay %s: GET %s -> HTTP %d", relay.name, shown, response.status_code)
                        if response.is_redirect and response.headers.get("location"):
                            location = urljoin(current, response.headers["location"])
                        elif response.status_code >= 300:
                            body = await self._read_capped(response, 4096)
                            status = response.status_code
                            message = redact(body.decode("utf-8", "replace").strip()[:300], [relay.api_key])
                            fail = _Fail(
                                RelayFailed(
                                    f"HTTP {status} downloading the picture from {shown}: {message}",
                                    status=status,
                                    relay_message=message,
                                    retryable=True,
                                    key="error.download_failed",
                                ),
                                retry=status in RETRY_STATUSES,
                                retry_after=retry_after_seconds(response.headers) if status in RETRY_STATUSES else None,
                            )
                        else:
                            chunks: list[bytes] = []
                            total = 0
                            async for chunk in response.aiter_bytes():
                                total += len(chunk)
                                if total > self.max_answer_bytes:
                                    raise _TooBig()
                                chunks.append(chunk)
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
            except (httpx.TransportError,) as exc:
                fail = _Fail(_network(f"downloading the picture failed: {_describe(exc, relay)}"), retry=True)
            if fail is not None:
                return fail
            if location is None:
                break
            current = location
        detail = f"too many redirects downloading the picture from {redact(url, [relay.api_key])}"
        return _Fail(RelayFailed(detail, relay_message=detail, key="error.download_failed"), retry=False)


# --- helpers --------------------------------------------------------------------------------

_JSON = {"Content-Type": "application/json"}


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _retry_hint(headers: httpx.Headers | None, info: ErrorInfo) -> float | None:
    """Retry-After (or retry-after-ms) when sent, else Google's RetryInfo.retryDelay."""
    from_header = retry_after_seconds(headers) if headers is not None else None
    return from_header if from_header is not None else info.retry_delay


def _wants_json(message: str) -> bool:
    lowered = message.lower()
    return any(
        word in lowered
        for word in ("json", "content-type", "content type", "multipart", "form", "parse", "image is required", "missing image", "no image")
    )


def _broken(detail: str) -> RelayFailed:
    return RelayFailed(
        f"the relay's answer was broken: {detail}",
        relay_message=detail,
        retryable=True,
        key="error.broken_answer",
    )


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
        except (RelayError, BrokenAnswer, AnswerError, DecodeError):
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


class _SSE:
    """Server-sent events, each ``data:`` payload decoded by its own StreamDecoder."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self.events: list[Any] = []

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            self._data.append(line[5:].lstrip(b" "))

    def _dispatch(self) -> None:
        if not self._data:
            return
        payload = b"\n".join(self._data)
        self._data = []
        if payload.strip() == b"[DONE]":
            return
        decoder = StreamDecoder()
        decoder.feed(payload)
        self.events.append(decoder.close())

    def close(self) -> list[Any]:
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r"))
            self._buffer = b""
        self._dispatch()
        if not self.events:
            raise DecodeError("the event stream held no data")
        return self.events
