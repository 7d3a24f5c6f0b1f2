"""Reading a server-sent-events answer (``text/event-stream``) as it arrives.

Relays that stream (asked to or not) send each JSON chunk as one event's ``data:``; each
event's payload goes into its own :class:`~.stream.StreamDecoder`, so a 35 MB picture in one
data line is decoded as it comes and never held whole.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from .blob import Budget, DecodeError, RefusedAnswer
from .stream import StreamDecoder

_LINE_HEAD, _LINE_DATA, _LINE_SKIP = 0, 1, 2
_DONE = b"[DONE]"

# Called with each event as it completes, on the event loop (see .previews); None: nobody asks.
ON_EVENT: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar("sse_on_event", default=None)


class EventStream:
    """Server-sent events, each event's ``data:`` payload fed into its own StreamDecoder as it
    arrives.

    The framing is read in one pass: every byte is looked at once however the stream is cut,
    and a data line (35 MB for a 4K picture) is never held whole. Same rules as reading whole
    lines: lines end at "\\n" (a "\\r" before it is dropped), an empty line ends an event,
    only ``data:`` lines count (spaces after the colon skipped), an event's data lines are
    joined with "\\n", and a ``[DONE]`` payload is no event.
    """

    def __init__(self, budget: Budget | None = None, on_event: Callable[[Any], None] | None = None) -> None:
        self.on_event = on_event
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
        event = decoder.close()
        if self.on_event is not None:
            self.on_event(event)
        self.events.append(event)

    def close(self) -> list[Any]:
        # close() may run in a worker thread (a heavy answer): the last event, the picture, is
        # gathered without the hook, which runs on the event loop only.
        self.on_event = None
        if self._mode != _LINE_HEAD or self._head:  # a last line without its newline
            self._end_line()
        self._dispatch()
        if not self.events:
            raise DecodeError("the event stream held no data")
        return self.events
