"""Sending one validated request in the relay's dialect, with each dialect's one-time resends.

Before sending, :func:`prepare` fits the request to the dialect: the OpenAI dialects have no
multi-turn, so they get "latest picture + new instruction" instead of the history; inputs are
identified by their bytes, converted or refused (``images.prepare``), and shrunk until the
body fits the budget. The body is serialised once, in a worker thread, and reused by every
attempt. A relay refusing a field by name, or a form of request, gets one resend without it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from . import gateway_errors, gemini, images, openai_chat, openai_images, previews
from .answer import AnswerError, BrokenAnswer, Parsed
from .blob import DecodeError, RefusedAnswer
from .body import Sent, approx_json_size, post_json
from .call import Caller
from .sse import ON_EVENT
from .types import GenerationRequest, InputImage, InvalidRequest, RelayConfig, RelayError, RelayFailed

log = logging.getLogger("bot.relay")

Turn = dict[str, Any]


def fit_dialect(relay: RelayConfig, req: GenerationRequest) -> GenerationRequest:
    """``req`` as ``relay``'s dialect can take it (nothing sent yet)."""
    history = list(req.history)
    inputs = list(req.images)
    if relay.dialect != "gemini" and history:
        # No multi-turn in the OpenAI dialects: the latest picture + the new instruction.
        if not inputs:
            latest = gemini.history_image(history)
            if latest is not None:
                inputs = [latest]
        history = []
    if relay.dialect == "openai-images" and len(inputs) > openai_images.MAX_EDIT_IMAGES:
        # The edits endpoint takes 1-6 pictures: tighter than the models' own limit.
        raise InvalidRequest(
            f"the openai-images format takes at most {openai_images.MAX_EDIT_IMAGES} input images; got {len(inputs)}",
            key="invalid.too_many_images_dialect",
            dialect=relay.dialect,
            count=len(inputs),
            limit=openai_images.MAX_EDIT_IMAGES,
        )
    return replace(req, history=history, images=inputs)


def prepare(req: GenerationRequest, body_budget: int) -> tuple[list[InputImage], Turn]:
    """The inputs, identified and fitted to the budget, and the user turn carrying them.
    Holds the GIL for a while (decoding, shrinking, base64): run it in a worker thread."""
    labels = [f"input image {i + 1}" for i in range(len(req.images))]
    prepared = [images.prepare(img.data, label) for img, label in zip(req.images, labels, strict=True)]
    fixed = approx_json_size(req.history) + len(req.prompt.encode("utf-8")) + 2_000
    if fixed > body_budget:
        raise InvalidRequest(
            f"the conversation history is too large to send (about {fixed / 1e6:.0f} MB; "
            f"the limit is about {body_budget / 1e6:.0f} MB); start a new conversation",
            key="invalid.history_too_large",
            size_mb=round(fixed / 1e6),
            limit_mb=round(body_budget / 1e6),
        )
    prepared = images.fit_budget(prepared, body_budget, fixed=fixed, labels=labels)
    return prepared, gemini.user_turn(req.prompt, prepared)


async def send(
    caller: Caller, relay: RelayConfig, req: GenerationRequest, prepared: list[InputImage], user_turn: Turn, timeout: float
) -> tuple[Parsed, Turn]:
    """The parsed answer and the user turn as sent (Gemini may resend it with another size)."""
    model = relay.model_name(req.model, req.size)
    if relay.dialect == "gemini":
        return await _gemini(caller, relay, req, model, prepared, timeout, user_turn)
    if relay.dialect == "openai-images":
        return await _openai_images(caller, relay, req, model, prepared, timeout), user_turn
    if relay.dialect == "openai-chat":

        async def chat(drop: tuple[str, ...]) -> Parsed:
            sent = await post_json(caller.endpoint(relay, openai_chat.PATH), openai_chat.build(req, model, prepared, drop))
            return await caller.request(relay, sent, timeout=timeout, parse=checked(openai_chat.parse))

        return await _resending(relay, chat), user_turn
    # RelayConfig.dialect is a Literal and settings validate it: only a caller bypassing both.
    raise InvalidRequest(f"unknown relay format {relay.dialect!r}", key="invalid.dialect", value=relay.dialect)  # pragma: no cover


async def _gemini(
    caller: Caller, relay: RelayConfig, req: GenerationRequest, model: str, prepared: list[InputImage], timeout: float, user_turn: Turn
) -> tuple[Parsed, Turn]:
    sink = previews.wanted(relay, req)
    if sink is not None:
        try:
            return await _streamed(caller, relay, req, model, prepared, timeout, user_turn, sink)
        except RelayFailed as exc:
            if not _stream_refused(exc):
                raise
            # Answered with an error status, or never reached: nothing was made or billed.
            log.info("relay %s did not stream (%s); asking without previews", relay.name, exc.relay_message or exc)
    url = caller.endpoint(relay, gemini.path(model))
    body, turn = gemini.build(req, prepared, req.size, turn=user_turn)
    sent = await post_json(url, body)
    failure: RelayFailed | None = None
    try:
        return await caller.request(relay, sent, timeout=timeout, parse=_gemini_answer), turn
    except RelayFailed as exc:
        # Any plain 400 (not a key problem): relays often answer Google's generic "Request
        # contains an invalid argument." without naming the field. A 400 is not billed.
        if not (req.size == "512" and exc.status == 400 and exc.key != "error.auth"):
            raise
        failure = exc
    # Google's spelling is "512"; some relays document (and only take) "512px". Resend once.
    log.info("relay %s refused imageSize 512 (%s); resending as 512px", relay.name, failure.relay_message)
    body, turn = gemini.build(req, prepared, "512px", turn=user_turn)
    sent = await post_json(url, body)
    return await caller.request(relay, sent, timeout=timeout, parse=_gemini_answer), turn


async def _streamed(
    caller: Caller,
    relay: RelayConfig,
    req: GenerationRequest,
    model: str,
    prepared: list[InputImage],
    timeout: float,
    user_turn: Turn,
    sink: previews.PreviewSink,
) -> tuple[Parsed, Turn]:
    """The answer streamed with the model's thoughts, each handed to ``sink`` as it arrives.
    One attempt: whatever goes wrong before the relay answers is retried by the plain call."""
    url = caller.endpoint(relay, gemini.stream_path(model))
    body, turn = gemini.build(req, prepared, req.size, turn=user_turn, thoughts=True)
    sent = await post_json(url, body)
    token = ON_EVENT.set(previews.ThoughtReader(sink))
    try:
        return await caller.request(relay, sent, timeout=timeout, parse=_gemini_answer, attempts=1), turn
    finally:
        ON_EVENT.reset(token)


def _stream_refused(exc: RelayFailed) -> bool:
    """The stream endpoint said no (any HTTP error but the key's own), or could not be reached:
    the plain call is tried instead. Timeouts and broken streams are not: the relay may have
    made - and billed - the picture already."""
    if exc.key == "error.auth" or exc.status in (401, 402, 403):
        return False
    return exc.status is not None or exc.key == "error.network"


async def _openai_images(
    caller: Caller, relay: RelayConfig, req: GenerationRequest, model: str, prepared: list[InputImage], timeout: float
) -> Parsed:
    parse = checked(openai_images.parse)

    async def attempt(drop: tuple[str, ...]) -> Parsed:
        if not prepared:
            body = openai_images.build_generation(req, model, drop)
            sent = await post_json(caller.endpoint(relay, openai_images.GENERATIONS), body)
            return await caller.request(relay, sent, timeout=timeout, parse=parse)
        fields, files = openai_images.build_edit(req, model, prepared, drop)
        url = caller.endpoint(relay, openai_images.EDITS)
        failure: RelayFailed | None = None
        try:
            return await caller.request(relay, Sent("POST", url, data=fields, files=files), timeout=timeout, parse=parse)
        except RelayFailed as exc:
            if not (
                exc.status in (400, 415, 422)
                and exc.key != "error.param_refused"
                and gateway_errors.wants_json_body(exc.relay_message, fields)
            ):
                raise
            failure = exc
        # Some relays take edits only as JSON with data-URL pictures, and say so in a 4xx.
        log.info("relay %s refused the multipart edit (%s); resending as JSON", relay.name, failure.relay_message)
        sent = await post_json(url, openai_images.build_edit_json(req, model, prepared, drop))
        return await caller.request(relay, sent, timeout=timeout, parse=parse)

    return await _resending(relay, attempt)


async def _resending(relay: RelayConfig, attempt: Callable[[tuple[str, ...]], Awaitable[Parsed]]) -> Parsed:
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


def checked(parse: Callable[[Any], Parsed]) -> Callable[[Any], Parsed]:
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


_parse_gemini = checked(gemini.parse)


def _gemini_answer(value: object) -> Parsed:
    """A Gemini answer, its model turn without unsigned thought parts, streamed or not: a relay
    may send drafts even when none were asked for, and the conversation must replay the same
    turn whichever way the answer came (signed parts stay, exactly as sent)."""
    parsed = _parse_gemini(value)
    parsed.model_turn = previews.without_thoughts(parsed.model_turn)
    return parsed
