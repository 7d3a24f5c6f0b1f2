"""Decoding relay answers incrementally, so a 35 MB answer never blocks the event loop.

Interface:
- ``StreamDecoder().feed(chunk)`` for each body chunk, then ``.close()`` -> the parsed JSON.
  Large JSON strings holding base64 may come back as :class:`Blob` instead of ``str``.
  On an event loop prefer ``await decoder.afeed(chunk)``: same result, shorter loop steps.
- ``b64_bytes(value)``: bytes of a base64 field, whether it is a ``str`` or a ``Blob``.
- ``data_urls(value)``: the ``data:image/...;base64,`` images inside a text or ``Blob``.
- ``plain_text(value)``: the text of a field with any data-URL images cut out.

Why not ``json.loads`` + ``b64decode``: both hold the GIL for ~100 ms on a 4K answer (so a
thread does not help), and together they keep four or five copies of the image alive. Here
each chunk costs work proportional to its size, and memory stays near one decoded image.

How: a byte scanner copies the small JSON structure into a *skeleton*. When a string grows
past :data:`THRESHOLD` bytes and ends in a long run of base64 characters, the run is decoded
chunk by chunk with ``pybase64`` (SIMD C) into a buffer, and the skeleton gets a marker in
its place. ``close()`` parses the small skeleton with ``json.loads`` (so escapes, unicode and
errors behave exactly as there) and swaps markers for :class:`Blob` objects. A string only
becomes a Blob when it is a whole base64 value or a run of ``data:<mime>;base64,`` URLs;
anything else comes back as the exact ``str`` ``json.loads`` would give.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from typing import Any

import pybase64

from .b64run import ALPHABET, OTHER_ESCAPE, RUN, STR_BODY, Run, strict_decode, unescape_run, with_breaks
from .blob import DATA_URL_PREFIX, Blob, Budget, DecodeError

# A string is considered for streaming once it reaches this many bytes...
THRESHOLD = 64 * 1024
# ...and only if it ends in at least this many bytes of base64 (a data URL's prefix is short).
MIN_RUN = 32 * 1024

# afeed() hands chunks to feed() in slices this big, and yields to the loop once a step has
# taken this long. Measured with 16 4K answers in flight: the loop's p99 busy time per 1 ms
# tick fell from 13-15 ms (whole chunks) to 6-7 ms, with no CPU cost visible above the noise.
SLICE = 16 * 1024
STEP_BUDGET = 0.00005
# Inside a base64 run (no closing quote ahead) afeed() decodes this much per step: pybase64 and
# the buffer's memcpy take ~0.1 ms for it. Measured: see bench/results/2026-12-02-speed.md.
RUN_SLICE = 64 * 1024
# A slice that took longer than this makes the next ones 4x smaller, down to MIN_SLICE.
SLOW_SLICE = 0.002
MIN_SLICE = 256


_OUT, _STR, _B64 = 0, 1, 2


def _match_end(pattern: re.Pattern[bytes], buf: bytes, pos: int, limit: int) -> int:
    """Where ``pattern`` (one that matches the empty string too) stops from ``pos``."""
    match = pattern.match(buf, pos, limit)
    assert match is not None
    return match.end()


class StreamDecoder:
    """Feed the body chunk by chunk; ``close()`` returns the parsed JSON.

    Each ``feed`` does work proportional to its chunk (nothing is rescanned), so feeding the
    64 KiB pieces an HTTP client yields keeps every step well under a millisecond.
    """

    def __init__(self, *, threshold: int = THRESHOLD, min_run: int = MIN_RUN, budget: Budget | None = None) -> None:
        # (threshold/min_run are knobs for tests, which exercise the streaming path on small bodies)
        self._budget = budget if budget is not None else Budget()
        self._slice = SLICE
        self._busy = 0.0  # seconds afeed() has worked since it last yielded to the loop
        self._tokens = 0
        self._threshold = threshold
        self._min_run = max(4, min(min_run, threshold))
        self._skel = bytearray()
        self._mode = _OUT
        self._carry = b""  # bytes held back because an escape or padding was cut by the chunk end
        self._seg_start = 0  # skeleton offset where the current string's text segment starts
        self._next_check = 0  # skeleton offset at which that segment is examined for base64
        self._runs: list[Run] = []
        self._run: Run | None = None
        self._pending = b""  # 0-3 base64 characters waiting for the rest of their group
        self._nonce = secrets.token_hex(8)
        self._closed = False

    # -- feeding -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self._closed:
            raise RuntimeError("StreamDecoder.feed() after close()")
        if not chunk:
            return
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        if self._carry:
            chunk = self._carry + chunk
            self._carry = b""
        pos, end = 0, len(chunk)
        before = len(self._skel)
        self._tokens = 0
        while pos < end:
            if self._mode == _OUT:
                pos = self._feed_out(chunk, pos)
            elif self._mode == _STR:
                pos = self._feed_str(chunk, pos)
            else:
                pos = self._feed_b64(chunk, pos)
        # (the skeleton shrinks when text turns out to be a base64 run: that gives budget back)
        self._budget.charge(len(self._skel) - before, self._tokens)

    async def afeed(self, chunk: bytes) -> None:
        """:meth:`feed` for use on an event loop: a large chunk is fed in slices, yielding to
        the loop whenever this decoder has worked :data:`STEP_BUDGET` seconds since it last did.

        asyncio runs every ready callback before it looks at timers again, so with 16 answers
        streaming in, one loop iteration decodes 16 chunks; slicing keeps that iteration short.
        The budget carries over from one call to the next: a caller may feed many chunks
        without awaiting anything in between (gzip inflating one network read into many).
        """
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        if len(chunk) <= self._slice and self._slice == SLICE and self._mode != _B64:
            self.feed(chunk)  # e.g. an SSE event's few bytes: microseconds, nothing to time
            return
        start = 0
        while start < len(chunk):
            began = time.perf_counter()
            if self._mode == _B64 and chunk.find(b'"', start, start + RUN_SLICE) < 0:
                # The next RUN_SLICE bytes all belong to the base64 run being decoded (its
                # closing quote is not among them): C-speed work, so one step of that size
                # instead of four small ones, and not timed (thread_time() is a system call).
                self.feed(chunk[start : start + RUN_SLICE] if start or len(chunk) > RUN_SLICE else chunk)
                start += RUN_SLICE
            else:
                cpu = time.thread_time()  # CPU time: a slice the OS preempted is not slow
                self.feed(chunk[start : start + self._slice] if start or len(chunk) > self._slice else chunk)
                start += self._slice
                if time.thread_time() - cpu > SLOW_SLICE and self._slice > MIN_SLICE:
                    # Dense structure (thousands of tiny strings per slice) costs ~100x more per
                    # byte than base64: smaller slices keep each step short.
                    self._slice //= 4
            self._busy += time.perf_counter() - began
            if self._busy > STEP_BUDGET:
                await asyncio.sleep(0)
                self._busy = 0.0

    def _feed_out(self, buf: bytes, pos: int) -> int:
        quote = buf.find(b'"', pos)
        stop = len(buf) if quote < 0 else quote
        self._tokens += buf.count(b",", pos, stop) + buf.count(b"{", pos, stop) + buf.count(b"[", pos, stop)
        if quote < 0:
            self._skel += buf[pos:] if pos else buf
            return len(buf)
        self._tokens += 1
        if self._tokens > 1024:
            # A slice full of tiny strings: charge as we go, so the bound holds within a slice.
            self._budget.charge(0, self._tokens)
            self._tokens = 0
        self._skel += buf[pos : quote + 1]
        self._mode = _STR
        self._seg_start = len(self._skel)
        self._next_check = self._seg_start + self._threshold
        return quote + 1

    def _feed_str(self, buf: bytes, pos: int) -> int:
        end = len(buf)
        # Stop exactly at the check point so the outcome never depends on how the body was cut.
        limit = min(end, pos + max(0, self._next_check - len(self._skel)))
        stop = _match_end(STR_BODY, buf, pos, limit)
        if stop < limit and buf[stop] == 0x5C and stop + 1 < end:  # an escape straddles the limit
            stop += 2
        self._skel += buf[pos:stop]
        if stop < end and buf[stop] == 0x22 and len(self._skel) < self._next_check:  # closing quote
            self._skel.append(0x22)
            self._mode = _OUT
            return stop + 1
        if stop == end - 1 and buf[stop] == 0x5C:  # "\" cut from its escaped character
            self._carry = buf[stop:]
            return end
        if len(self._skel) >= self._next_check:
            self._consider_run()
        return stop

    def _current(self) -> Run:
        assert self._run is not None, "no base64 run is being decoded"
        return self._run

    def _consider_run(self) -> None:
        """The current string is long: start decoding its trailing base64 run, if it has one."""
        seg = bytes(self._skel[self._seg_start :])
        # Candidate run: trailing alphabet bytes and backslashes; then walk its escapes from
        # the left, as the run may only start after the last escape that is not "\/".
        start = len(seg.rstrip(ALPHABET + b"\\"))
        begin = start
        while True:
            slash = seg.find(b"\\", start)
            if slash < 0:
                break
            escaped = seg[slash + 1 : slash + 2]
            if escaped in (b"/", b"n", b"r"):
                start = slash + 2
                continue
            start = begin = slash + (6 if escaped == b"u" else 2)
        if len(seg) - begin < self._min_run:
            self._next_check = len(self._skel) + self._threshold
            return
        run_text, breaks = unescape_run(seg[begin:])  # every backslash here starts "\/", "\n" or "\r"
        del self._skel[self._seg_start + begin :]
        self._run = Run()
        self._pending = b""
        self._run.took(run_text, breaks)
        self._decode(run_text)
        self._skel += self._marker(len(self._runs))
        self._runs.append(self._run)
        self._mode = _B64

    def _decode(self, text: bytes) -> None:
        """Decode base64 characters (no padding, no escapes) into the current run's buffer."""
        if self._pending:
            text = self._pending + text
        whole = len(text) & ~3
        if whole:
            self._current().write(strict_decode(memoryview(text)[:whole]))
        self._pending = text[whole:]

    def _feed_b64(self, buf: bytes, pos: int) -> int:
        end = len(buf)
        # Fast path: the run goes on past this chunk (no quote in it) and holds only base64
        # characters and "\/" escapes. Everything here runs at C speed.
        if buf.find(b'"', pos) < 0:
            region = buf[pos:] if pos else buf
            breaks: list[int] = []
            if b"\\" in region:
                if OTHER_ESCAPE.search(region) is None:
                    region, breaks = unescape_run(region)
                else:
                    region = b""
            if region and b"=" not in region:  # padding means the run ends: careful path
                text = self._pending + region if self._pending else region
                whole = len(text) & ~3
                rest = text[whole:]
                try:
                    if rest.translate(None, ALPHABET):  # the 0-3 bytes kept for later: check them too
                        raise binascii.Error
                    decoded = strict_decode(memoryview(text)[:whole])
                except binascii.Error:
                    pass  # not clean base64 after all: let the careful path find where it stops
                else:
                    run = self._current()
                    run.write(decoded)
                    run.took(region, breaks)
                    self._pending = rest
                    return end
        return self._finish_run(buf, pos)

    def _finish_run(self, buf: bytes, pos: int) -> int:
        """The careful path: find exactly where the run stops in this chunk."""
        end = len(buf)
        stop = _match_end(RUN, buf, pos, end)
        clean, breaks = unescape_run(buf[pos:stop])
        run = self._current()
        run.took(clean, breaks)
        self._decode(clean)
        if stop == end:
            return end
        if stop == end - 1 and buf[stop] == 0x5C:  # maybe "\/" cut in two: wait for more
            self._carry = buf[stop:]
            return end
        tail = b""
        if buf[stop] == 0x3D and len(self._pending) >= 2:  # "=" padding closes the last group
            need = 4 - len(self._pending)
            got = buf[stop : stop + need]
            if got == b"=" * len(got) and len(got) < need and stop + len(got) == end:
                self._carry = got  # padding cut by the chunk end
                return end
            if got == b"=" * need:
                group = self._pending + got
                decoded = binascii.a2b_base64(group)
                if base64.b64encode(decoded) == group:  # canonical: re-encodes to the same text
                    run.write(decoded)
                    self._pending = b""
                    stop += need
        if self._pending:
            run.clean = False  # a partial group: not valid base64 as it stands
            tail = self._pending
            self._pending = b""
            whole = run.chars - len(tail)
            later = [code for code in run.breaks if (code >> 1) > whole]
            if later:  # breaks among the tail's characters go back into it, as JSON escapes
                del run.breaks[len(run.breaks) - len(later) :]
                pieces: list[bytes] = []
                last = 0
                for code in later:
                    offset = (code >> 1) - whole
                    pieces += (tail[last:offset], b"\\n" if code & 1 else b"\\r")
                    last = offset
                tail = b"".join(pieces) + tail[last:]
        run.finish()
        self._run = None
        # The rest of the string is ordinary text (a closing ")" and maybe more data URLs).
        self._skel += tail
        self._mode = _STR
        self._seg_start = len(self._skel) - len(tail)
        self._next_check = self._seg_start + self._threshold
        return stop

    # -- closing -------------------------------------------------------------------------

    def close(self) -> Any:
        self._closed = True
        if self._mode != _OUT or self._carry:
            raise DecodeError("answer is not valid JSON (truncated inside a string)")
        skel, self._skel = self._skel, bytearray()
        try:
            value = json.loads(skel)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"answer is not valid JSON ({exc.__class__.__name__}: {exc})") from None
        if not self._runs:
            return value
        self._find = re.compile("\ue000" + self._nonce + r":(\d+)\ue001").split
        self._marker_head = "\ue000" + self._nonce + ":"
        return self._resolve(value)

    def _marker(self, index: int) -> bytes:
        return f"\ue000{self._nonce}:{index}\ue001".encode()

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._blob(value) if self._marker_head in value else value
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, (str, list, dict)):
                    value[i] = self._resolve(item)
            return value
        if isinstance(value, dict):
            if any(self._marker_head in key for key in value):  # absurd, but keep it exact
                return {self._exact(k) if self._marker_head in k else k: self._resolve(v) for k, v in value.items()}
            for key, item in value.items():
                if isinstance(item, (str, list, dict)):
                    value[key] = self._resolve(item)
            return value
        return value

    def _pieces(self, text: str) -> tuple[list[str], list[Run]]:
        parts = self._find(text)
        return parts[0::2], [self._runs[int(i)] for i in parts[1::2]]

    def _exact(self, text: str) -> str:
        texts, runs = self._pieces(text)
        out = [texts[0]]
        for run, after in zip(runs, texts[1:], strict=True):
            out += (with_breaks(pybase64.b64encode(run.data).decode("ascii"), run.breaks), after)
        return "".join(out)

    def _blob(self, text: str) -> Blob | str:
        texts, runs = self._pieces(text)
        if not all(run.clean for run in runs):
            return self._exact(text)
        if len(runs) == 1 and texts == ["", ""]:
            return Blob(runs[0].data, breaks=runs[0].breaks)
        # Otherwise only data URLs: each run introduced by "data:<mime>;base64," and not
        # followed by more padding (which would make it invalid base64).
        if not all(DATA_URL_PREFIX.search(before) for before in texts[:-1]) or any(after.startswith("=") for after in texts[1:]):
            return self._exact(text)
        chain: Blob | None = None
        for i in range(len(runs) - 1, -1, -1):
            chain = Blob(runs[i].data, texts[i], texts[-1] if chain is None else "", chain, runs[i].breaks)
        assert chain is not None  # a text with a marker has at least one run
        return chain
