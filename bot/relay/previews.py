"""Live previews: the model's interim thought pictures and words, handed on as they stream in.

The 3.x models think before they draw and, asked with ``thinkingConfig.includeThoughts``, send
their thoughts as parts marked ``"thought": true`` - words, and up to two draft pictures -
before the picture itself. ``:streamGenerateContent?alt=sse`` sends each part as its own event
as soon as it is made, so a draft can be shown while the model is still working.

Whoever wants previews sets a sink with :func:`receiving` around the call (the job runner
does; nothing between it and the relay client needs to know). The sink is called on the
event loop, in order, once per thought part; it must return at once (it may schedule work).

What reaches the conversation record is unchanged: thought parts without a signature are
dropped from the model turn (see :func:`without_thoughts`), the rest is kept exactly as sent,
so a streamed answer stores the same history as a plain one.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .answer import get
from .blob import Blob, DecodeError, b64_bytes
from .catalogue import MODELS
from .types import GenerationRequest, RelayConfig

log = logging.getLogger("bot.relay")

SUMMARY_CHARS = 120


@dataclass(frozen=True)
class Preview:
    """One thought as it arrived: ``draft`` counts the draft pictures so far (0 before the first)."""

    draft: int
    image: bytes | None = field(default=None, repr=False)
    mime_type: str = ""
    summary: str = ""  # the latest thought words, as one line


PreviewSink = Callable[[Preview], None]
_SINK: contextvars.ContextVar[PreviewSink | None] = contextvars.ContextVar("preview_sink", default=None)


@contextmanager
def receiving(sink: PreviewSink) -> Iterator[None]:
    """Previews of the generations made inside this block go to ``sink``."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def wanted(relay: RelayConfig, request: GenerationRequest) -> PreviewSink | None:
    """The sink, when someone wants previews and this relay and model can give them."""
    sink = _SINK.get()
    spec = MODELS.get(request.model)
    if sink is None or relay.dialect != "gemini" or spec is None or not spec.thoughts:
        return None
    return sink


def summarise(text: str) -> str:
    """A thought as one line: its heading when it has one (the models write ``**Heading**``
    then a paragraph), else its first line, bold markers dropped wherever they are (a bold
    word mid-line would otherwise leave a stray ``**``); cut to :data:`SUMMARY_CHARS`."""
    lines = [line.replace("**", "").strip().strip("*#").strip() for line in text.splitlines()]
    first = next((line for line in lines if line), "")
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1].rstrip() + "…"


class ThoughtReader:
    """Called with each streamed event (a partial answer): hands its thought parts to the sink.

    A draft picture is handed on and then dropped from the event (its data emptied), so the
    answer being gathered holds at most the final picture, not every draft too. A broken
    draft is skipped: it is a preview, the picture is what counts."""

    def __init__(self, sink: PreviewSink) -> None:
        self.sink = sink
        self.drafts = 0
        self.summary = ""

    def __call__(self, event: Any) -> None:
        candidates = get(event, "candidates")
        for cand in candidates[:1] if isinstance(candidates, list) else []:
            parts = get(get(cand, "content"), "parts")
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and part.get("thought") is True:
                    self._thought(part)

    def _thought(self, part: dict[str, Any]) -> None:
        preview: Preview | None = None
        text = part.get("text")
        inline = get(part, "inlineData")
        if isinstance(text, str) and text.strip():
            self.summary = summarise(text)
            preview = Preview(self.drafts, summary=self.summary)
        elif isinstance(inline, dict) and isinstance(inline.get("data"), (str, Blob)):
            try:
                image = b64_bytes(inline["data"])
            except DecodeError:
                return
            inline["data"] = ""
            self.drafts += 1
            preview = Preview(self.drafts, image, str(get(inline, "mimeType") or "image/png"), self.summary)
        if preview is None:
            return
        try:
            self.sink(preview)
        except Exception:  # a preview must never cost the picture
            log.exception("a preview sink failed")


def without_thoughts(turn: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model turn without its unsigned thought parts (in place, and returned).

    The drafts are the model's scratch work: a plain answer (``includeThoughts: false``) has
    none, and the conversation replays what a plain answer holds. A thought part that carries a
    ``thoughtSignature`` stays: signatures go back to the model exactly as they came."""
    parts = turn.get("parts") if isinstance(turn, dict) else None
    if isinstance(turn, dict) and isinstance(parts, list):
        turn["parts"] = [p for p in parts if not (isinstance(p, dict) and p.get("thought") is True and not get(p, "thoughtSignature"))]
    return turn
