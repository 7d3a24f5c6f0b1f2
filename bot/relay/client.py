"""The relay client: one GenerationRequest in, one GenerationResult out, whatever the dialect.

Order of work for :meth:`RelayClient.generate`:
1. ``catalogue.validate`` - an InvalidRequest means nothing was sent.
2. The request fitted to the dialect and its inputs prepared (:mod:`.send`).
3. The dialect's request sent, with its one-time resends (:mod:`.send`), each attempt a
   bounded HTTP call retried by the policy below (:mod:`.call`, :mod:`.failures`). Big base64
   values stay :class:`~.stream.Blob` objects, in ``model_turn`` too (see ``GenerationResult``).
4. ``url`` answers are downloaded at once (:mod:`.download`, through the URL guard).

Retry policy (decided in :mod:`.failures` and :mod:`.call`, documented for the failover layer):
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
that is logged, and every message built here is redacted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urljoin

from . import images
from .answer import MODEL_TEXT_CAP, AnswerError, Parsed, error_info
from .body import Sent, approx_json_size, post_json
from .call import DEADLINE, Caller, api_root
from .capabilities import dialect_notes
from .catalogue import DEFAULT_MODEL, shape_notes, timeout_for, validate
from .download import download
from .redact import cut, register_secret, relay_scope
from .send import fit_dialect, prepare, send
from .types import GenerationRequest, GenerationResult, RelayConfig, RelayFailed

__all__ = ["HISTORY_BUDGET", "PROBE_TIMEOUT", "SMALL_ANSWER_BYTES", "RelayClient", "approx_json_size"]

# History sent back per request (bot and CLI alike): the default 20 MB body budget less room for
# the new prompt and a new picture (which the client shrinks to fit). A real 4K turn is about
# 15-17 MB of JSON, so it still goes back whole.
HISTORY_BUDGET = 19_000_000
PROBE_TIMEOUT = 30.0
# Model lists and balance answers are small; a relay answering megabytes there is broken.
SMALL_ANSWER_BYTES = 2 * 2**20


class RelayClient(Caller):
    """Generation, the relay test and small JSON calls. Construct with the limits of
    :class:`~.call.Caller`; ``timeout`` overrides the per-size allowance from
    ``catalogue.timeout_for`` (tests, CLI)."""

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def generate(self, relay: RelayConfig, request: GenerationRequest, *, deadline: float | None = None) -> GenerationResult:
        """``deadline``: a ``time.monotonic()`` instant by which the whole call ends, retries
        and the picture download included (the job deadline of bot/relays/pool.py)."""
        register_secret(relay.api_key)  # (a stored relay's: masked in log records)
        token = DEADLINE.set(deadline)
        try:
            # Everything said about this request - errors, refusals, the model's text - is
            # redacted with this relay's key too (and the operator's, always).
            with relay_scope(relay.api_key):
                return await self._generate(relay, request)
        finally:
            DEADLINE.reset(token)

    async def _generate(self, relay: RelayConfig, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        req = fit_dialect(relay, validate(request))
        # Off the loop: identifying/shrinking inputs and base64-encoding them hold the GIL.
        prepared, user_turn = await asyncio.to_thread(prepare, req, self.body_budget)
        timeout = self.timeout if self.timeout is not None else timeout_for(req.size)
        parsed, user_turn = await send(self, relay, req, prepared, user_turn, timeout)
        image = await self._picture(relay, parsed, timeout)
        info = images.identify(image)  # checked already for inline answers; cheap
        return GenerationResult(
            image=image,
            mime_type=info.mime_type,
            width=info.width,
            height=info.height,
            model=req.model,
            text=cut(parsed.text, MODEL_TEXT_CAP),
            usage=parsed.usage,
            sources=parsed.sources,
            image_queries=parsed.image_queries,
            model_turn=parsed.model_turn if relay.dialect == "gemini" else None,
            user_turn=user_turn,
            elapsed_s=round(time.monotonic() - started, 3),
            relay_name=relay.name,
            # What the member asked that did not arrive: checked on the picture itself.
            notes=dialect_notes(req, relay.dialect) + shape_notes(req, info.width, info.height),
        )

    async def _picture(self, relay: RelayConfig, parsed: Parsed, timeout: float) -> bytes:
        """The answer's picture: inline, or downloaded now from the URL it gave."""
        if parsed.image is None and parsed.image_url:
            url = urljoin(relay.base_url.rstrip("/") + "/", parsed.image_url)
            parsed.image = await download(self, relay, url, timeout)
        assert parsed.image is not None
        return parsed.image

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
        urls = [self.endpoint(relay, path) for path in paths]
        if relay.dialect == "gemini":
            urls.append(api_root(self.endpoint(relay, "")) + "/v1/models")
        started = time.monotonic()
        with relay_scope(relay.api_key):
            for i, url in enumerate(urls):
                try:
                    await self.request(relay, Sent("GET", url), timeout=PROBE_TIMEOUT, parse=probe_parse, attempts=1)
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
        url = self.endpoint(relay, path) if versioned else api_root(relay.base_url) + path
        sent = Sent("GET", url) if body is None else await post_json(url, body)
        small = self.limited(max_attempts=1, max_answer_bytes=max_bytes)
        with relay_scope(relay.api_key):
            return await small.request(relay, sent, timeout=timeout, parse=probe_parse, attempts=1)


def probe_parse(value: Any) -> Any:
    """A small JSON answer as it is; an error envelope in it raised (an AnswerError)."""
    info = error_info(value)
    if info and isinstance(value, dict) and "error" in value:
        raise AnswerError(info)
    return value
