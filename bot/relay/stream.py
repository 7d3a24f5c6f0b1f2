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
import ctypes
import io
import json
import os
import platform
import re
import secrets
import time
from array import array
from typing import Any

import pybase64

# A string is considered for streaming once it reaches this many bytes...
THRESHOLD = 64 * 1024
# ...and only if it ends in at least this many bytes of base64 (a data URL's prefix is short).
MIN_RUN = 32 * 1024

# afeed() hands chunks to feed() in slices this big, and yields to the loop once a step has
# taken this long. Measured with 16 4K answers in flight: the loop's p99 busy time per 1 ms
# tick fell from 13-15 ms (whole chunks) to 6-7 ms, with no CPU cost visible above the noise.
SLICE = 16 * 1024
STEP_BUDGET = 0.00005
# A slice that took longer than this makes the next ones 4x smaller, down to MIN_SLICE.
SLOW_SLICE = 0.002
MIN_SLICE = 256

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Inside a JSON string, one character of a base64 run: a plain alphabet byte, an escaped
# slash (PHP-style encoders write "/" as "\/"), or an escaped line break ("\n", "\r"): MIME
# encoders, and relays built on them, break base64 into 76-character lines.
_RUN = re.compile(rb"(?:[A-Za-z0-9+/]++|\\[/nr])*+")
# Everything in a JSON string up to its closing quote or an escape cut by the chunk end.
_STR_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
# A backslash that starts none of those escapes (or that ends the region, so we cannot tell yet).
_OTHER_ESCAPE = re.compile(rb"\\(?![/nr])")


_RUN_ESCAPE = re.compile(rb"\\([/nr])")
_BREAK_CHARS = {b"n": 1, b"r": 0}  # what a break records beside its offset: 1 "\n", 0 "\r"


def _unescape_run(text: bytes) -> tuple[bytes, list[int]]:
    r"""Base64 characters from a run's JSON text ("\/" read as "/", line breaks dropped), and
    where each dropped break stood: ``offset * 2 + kind`` in the clean text (kind 1 for
    ``\n``, 0 for ``\r``), so the exact string can be rebuilt (:func:`_with_breaks`)."""
    if b"\\" not in text:
        return text, []
    if b"\\n" not in text and b"\\r" not in text:
        return text.translate(None, b"\\"), []
    pieces: list[bytes] = []
    breaks: list[int] = []
    at = last = 0
    for m in _RUN_ESCAPE.finditer(text):
        piece = text[last : m.start()]
        pieces.append(piece)
        at += len(piece)
        if m.group(1) == b"/":
            pieces.append(b"/")
            at += 1
        else:
            breaks.append(at * 2 + _BREAK_CHARS[m.group(1)])
        last = m.end()
    pieces.append(text[last:])
    return b"".join(pieces), breaks


def _with_breaks(text: str, breaks: array | None) -> str:
    """``text`` (a run's base64) with its recorded line breaks put back."""
    if not breaks:
        return text
    out: list[str] = []
    last = 0
    for code in breaks:
        offset = code >> 1
        out += (text[last:offset], "\n" if code & 1 else "\r")
        last = offset
    out.append(text[last:])
    return "".join(out)


_OUT, _STR, _B64 = 0, 1, 2


def _strict_decode(text: bytes | memoryview) -> bytes:
    """Whole base64 groups (no padding) to bytes; ``binascii.Error`` on any other character.

    pybase64 (SIMD) instead of ``binascii.a2b_base64(strict_mode=True)``: measured on a 4K
    answer's 35 MB, 69 ms -> 3-9 ms, and the same refusals: ``validate=True`` raises
    ``binascii.Error`` for a byte outside the alphabet or a length that is not whole groups.
    """
    return pybase64.b64decode(text, validate=True)


class DecodeError(ValueError):
    """The body is not complete, valid JSON (e.g. truncated), or holds invalid base64."""


class RefusedAnswer(Exception):
    """The answer is past a bound (structure, size of what is not picture data, parts):
    refused, and not worth asking the same relay again."""


# What an answer may hold besides picture base64. A real answer (parts, usage, grounding)
# is a few KB of structure and at most some hundred KB of text; these bound the work the
# event loop does on it: json.loads of the whole skeleton at close() and the dialect parser
# walking it.
MAX_SKELETON = 1 * 2**20
MAX_TOKENS = 64_000
# A single text value longer than this is no model's words: refused before any pattern
# looks at it (each pattern is linear, but a few ms per MB add up).
MAX_TEXT = 64 * 2**10


class Budget:
    """The share of :data:`MAX_SKELETON`/:data:`MAX_TOKENS` left to one answer, across all its
    decoders (an SSE answer has one per event). A token is a string, a ``{``, ``[`` or ``,``
    outside strings, or an SSE line."""

    __slots__ = ("skeleton", "tokens", "max_skeleton", "max_tokens")

    def __init__(self, max_skeleton: int = MAX_SKELETON, max_tokens: int = MAX_TOKENS) -> None:
        self.skeleton = 0
        self.tokens = 0
        self.max_skeleton = max_skeleton
        self.max_tokens = max_tokens

    def charge(self, skeleton: int = 0, tokens: int = 0) -> None:
        self.skeleton += skeleton
        self.tokens += tokens
        if self.tokens > self.max_tokens:
            raise RefusedAnswer(f"the answer holds more than {self.max_tokens} JSON values")
        if self.skeleton > self.max_skeleton:
            raise RefusedAnswer(f"the answer holds more than {self.max_skeleton // 2**10} KB besides picture data")


class Blob:
    """A large JSON string decoded on the fly: ``prefix`` + base64(``data``) + ``suffix``.

    For a plain base64 field, prefix and suffix are empty. For a markdown data URL
    (``![image](data:image/png;base64,....)``), prefix holds the text up to the comma.
    A string with several data URLs is a chain: ``next`` is the Blob for the following
    image (its prefix is the text between the two), and ``suffix`` is then everything after
    this image as text. :meth:`text` rebuilds the exact string.
    """

    __slots__ = ("data", "prefix", "_suffix", "next", "breaks")

    def __init__(self, data: bytes, prefix: str = "", suffix: str = "", next: Blob | None = None, breaks: array | None = None) -> None:
        self.data = data
        self.prefix = prefix
        self._suffix = suffix
        self.next = next
        # Line breaks the relay put inside the base64 (MIME style), for text() to be exact.
        self.breaks = breaks or None

    @property
    def suffix(self) -> str:
        # Only a chain pays for re-encoding here; the last (or only) link is plain text.
        return self._suffix if self.next is None else self._suffix + self.next.text()

    @property
    def mime_type(self) -> str | None:
        match = _DATA_URL_PREFIX.search(self.prefix)
        return match.group(1) if match else None

    def links(self) -> list[Blob]:
        """This Blob and the ones chained after it."""
        out: list[Blob] = []
        link: Blob | None = self
        while link is not None:
            out.append(link)
            link = link.next
        return out

    def text(self) -> str:
        """The JSON string exactly as ``json.loads`` would have returned it."""
        pieces: list[str] = []
        for link in self.links():
            pieces += (link.prefix, _with_breaks(pybase64.b64encode(link.data).decode("ascii"), link.breaks), link._suffix)
        return "".join(pieces)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Blob):
            return NotImplemented
        return (self.data, self.prefix, self._suffix, self.next, self.breaks) == (
            other.data,
            other.prefix,
            other._suffix,
            other.next,
            other.breaks,
        )

    def __repr__(self) -> str:
        more = f", next={self.next!r}" if self.next is not None else ""
        return f"Blob({len(self.data)} bytes, prefix={self.prefix[-60:]!r}, suffix={self._suffix[:60]!r}{more})"


# The end of a text that introduces a data URL: "...data:image/png;base64,".
_DATA_URL_PREFIX = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,\Z")


# Process-wide allocator tweak (glibc only), made once, on the first big decode.
#
# Why: glibc raises its mmap threshold to the size of any large block freed (up to 32 MiB), so
# after the first decoded image is dropped, the next ones grow on the heap: every growth step
# copies them and the heap fragments. With 8 concurrent 4K answers that measured 308 MB peak
# RSS instead of 233 MB. A fixed threshold keeps big buffers in their own mappings, which grow
# in place (mremap) and go back to the system when freed.
#
# Scope: mallopt(M_MMAP_THRESHOLD) applies to every allocation of >= 1 MiB in the whole
# process (Pillow, discord.py, ...) and turns off glibc's sliding threshold; smaller blocks
# are not affected. The cost: such a block always starts as fresh pages, never reused heap,
# so whoever first fills it pays the page faults (measured no slower for a 35 MB string).
#
# Harmless elsewhere: on musl, macOS, Windows or any non-glibc libc nothing is called; an
# operator's own MALLOC_MMAP_THRESHOLD_ or glibc.malloc.mmap_threshold tunable is left
# alone; and if the call is missing or refused, only memory use differs.
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_allocator_tuned = False


def _tune_allocator() -> None:
    global _allocator_tuned
    _allocator_tuned = True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return  # the operator chose the allocator's settings
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # returns 0 on refusal: nothing to undo
    except (OSError, AttributeError):
        pass


class _Run:
    """One base64 run being decoded: where its bytes go and whether it ended cleanly."""

    __slots__ = ("out", "data", "clean", "chars", "breaks")

    def __init__(self) -> None:
        if not _allocator_tuned:
            _tune_allocator()
        self.out: io.BytesIO | None = io.BytesIO()
        self.data = b""
        self.chars = 0  # base64 characters fed so far (where the next break would stand)
        self.breaks = array("q")  # see _unescape_run
        # False when the run ended on a partial group (not valid base64 as it stands); the
        # string then goes back to being a str.
        self.clean = True

    def took(self, clean: bytes, breaks: list[int]) -> None:
        """Account for ``clean`` base64 characters fed, with the breaks found among them."""
        if breaks:
            base = self.chars * 2
            self.breaks.extend(base + code for code in breaks)
        self.chars += len(clean)


class StreamDecoder:
    """Feed the body chunk by chunk; ``close()`` returns the parsed JSON.

    Each ``feed`` does work proportional to its chunk (nothing is rescanned), so feeding the
    64 KiB pieces an HTTP client yields keeps every step well under a millisecond.
    """

    def __init__(self, *, threshold: int = THRESHOLD, min_run: int = MIN_RUN, budget: Budget | None = None) -> None:
        # (threshold/min_run are knobs for tests, which exercise the streaming path on small bodies)
        self._budget = budget if budget is not None else Budget()
        self._slice = SLICE
        self._tokens = 0
        self._threshold = threshold
        self._min_run = max(4, min(min_run, threshold))
        self._skel = bytearray()
        self._mode = _OUT
        self._carry = b""  # bytes held back because an escape or padding was cut by the chunk end
        self._seg_start = 0  # skeleton offset where the current string's text segment starts
        self._next_check = 0  # skeleton offset at which that segment is examined for base64
        self._runs: list[_Run] = []
        self._run: _Run | None = None
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
        the loop between them once this step has used :data:`STEP_BUDGET` seconds.

        asyncio runs every ready callback before it looks at timers again, so with 16 answers
        streaming in, one loop iteration decodes 16 chunks; slicing keeps that iteration short.
        """
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        if len(chunk) <= self._slice and self._slice == SLICE:
            self.feed(chunk)  # the usual case: base64 and a little JSON, microseconds per slice
            return
        started = time.perf_counter()
        start = 0
        while start < len(chunk):
            began = time.thread_time()  # CPU time: a slice the OS preempted is not slow
            self.feed(chunk[start : start + self._slice])
            start += self._slice
            if time.thread_time() - began > SLOW_SLICE and self._slice > MIN_SLICE:
                # Dense structure (thousands of tiny strings per slice) costs ~100x more per
                # byte than base64: smaller slices keep each step short.
                self._slice //= 4
            if time.perf_counter() - started > STEP_BUDGET and start < len(chunk):
                await asyncio.sleep(0)
                started = time.perf_counter()

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
        stop = _STR_BODY.match(buf, pos, limit).end()
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

    def _consider_run(self) -> None:
        """The current string is long: start decoding its trailing base64 run, if it has one."""
        seg = bytes(self._skel[self._seg_start :])
        # Candidate run: trailing alphabet bytes and backslashes; then walk its escapes from
        # the left, as the run may only start after the last escape that is not "\/".
        start = len(seg.rstrip(_ALPHABET + b"\\"))
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
        run_text, breaks = _unescape_run(seg[begin:])  # every backslash here starts "\/", "\n" or "\r"
        del self._skel[self._seg_start + begin :]
        self._run = _Run()
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
            self._run.out.write(_strict_decode(memoryview(text)[:whole]))
        self._pending = text[whole:]

    def _feed_b64(self, buf: bytes, pos: int) -> int:
        end = len(buf)
        # Fast path: the run goes on past this chunk (no quote in it) and holds only base64
        # characters and "\/" escapes. Everything here runs at C speed.
        if buf.find(b'"', pos) < 0:
            region = buf[pos:] if pos else buf
            breaks: list[int] = []
            if b"\\" in region:
                if _OTHER_ESCAPE.search(region) is None:
                    region, breaks = _unescape_run(region)
                else:
                    region = b""
            if region and b"=" not in region:  # padding means the run ends: careful path
                text = self._pending + region if self._pending else region
                whole = len(text) & ~3
                rest = text[whole:]
                try:
                    if rest.translate(None, _ALPHABET):  # the 0-3 bytes kept for later: check them too
                        raise binascii.Error
                    decoded = _strict_decode(memoryview(text)[:whole])
                except binascii.Error:
                    pass  # not clean base64 after all: let the careful path find where it stops
                else:
                    self._run.out.write(decoded)
                    self._run.took(region, breaks)
                    self._pending = rest
                    return end
        return self._finish_run(buf, pos)

    def _finish_run(self, buf: bytes, pos: int) -> int:
        """The careful path: find exactly where the run stops in this chunk."""
        end = len(buf)
        stop = _RUN.match(buf, pos).end()
        clean, breaks = _unescape_run(buf[pos:stop])
        assert self._run is not None
        self._run.took(clean, breaks)
        self._decode(clean)
        if stop == end:
            return end
        if stop == end - 1 and buf[stop] == 0x5C:  # maybe "\/" cut in two: wait for more
            self._carry = buf[stop:]
            return end
        run = self._run
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
                    run.out.write(decoded)
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
                pieces, last = [], 0
                for code in later:
                    offset = (code >> 1) - whole
                    pieces += (tail[last:offset], b"\\n" if code & 1 else b"\\r")
                    last = offset
                tail = b"".join(pieces) + tail[last:]
        run.data = run.out.getvalue()  # BytesIO hands over its buffer without a copy
        run.out = None
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

    def _pieces(self, text: str) -> tuple[list[str], list[_Run]]:
        parts = self._find(text)
        return parts[0::2], [self._runs[int(i)] for i in parts[1::2]]

    def _exact(self, text: str) -> str:
        texts, runs = self._pieces(text)
        out = [texts[0]]
        for run, after in zip(runs, texts[1:], strict=True):
            out += (_with_breaks(pybase64.b64encode(run.data).decode("ascii"), run.breaks), after)
        return "".join(out)

    def _blob(self, text: str) -> Blob | str:
        texts, runs = self._pieces(text)
        if not all(run.clean for run in runs):
            return self._exact(text)
        if len(runs) == 1 and texts == ["", ""]:
            return Blob(runs[0].data, breaks=runs[0].breaks)
        # Otherwise only data URLs: each run introduced by "data:<mime>;base64," and not
        # followed by more padding (which would make it invalid base64).
        if not all(_DATA_URL_PREFIX.search(before) for before in texts[:-1]) or any(after.startswith("=") for after in texts[1:]):
            return self._exact(text)
        chain: Blob | None = None
        for i in range(len(runs) - 1, -1, -1):
            chain = Blob(runs[i].data, texts[i], texts[-1] if chain is None else "", chain, runs[i].breaks)
        return chain


def b64_bytes(value: str | Blob) -> bytes:
    if isinstance(value, Blob):
        if not value.prefix and not value._suffix and value.next is None:
            return value.data
        value = value.text()  # not a plain base64 field: decode it as the text it is
    if "-" in value or "_" in value:
        # URL-safe base64, which proto3 JSON allows: b64decode would silently drop "-" and "_".
        value = value.translate(_URLSAFE)
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
        raise DecodeError(f"invalid base64 image data: {exc}") from None


_URLSAFE = str.maketrans("-_", "+/")
# The base64 of a data URL, MIME-wrapped or not: some relays break it into lines (76 or 64
# characters, as MIME/PEM encoders do). Only full-width lines may end in a line break, so text
# after a bare data URL on the next line is not taken for more base64.
_B64_BODY = r"(?:[A-Za-z0-9+/]{60,}+\r?\n)*[A-Za-z0-9+/]++={0,2}"
_DATA_URL = re.compile(r"data:(image/[\w.+-]+);base64,(" + _B64_BODY + ")")
# (No quantifier here may cross the bracket or parenthesis that starts another match, and
# none gives back what it took: on text made of "[" or "![a](data:image/" repeated a
# backtracking pattern took minutes; these stay linear.)
_MARKDOWN_IMAGE = re.compile(r"!?\[[^\[\]]*+\]\(data:image/[^()]*+\)")
_BARE_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64," + _B64_BODY)
# Stands in for a Blob's base64 when reading its text (a valid run, matched by the regexes).
_STAND_IN = "AAAA"


def check_text(value: str | Blob) -> None:
    """Refuse a text value from a relay past :data:`MAX_TEXT` characters (see there), before
    the patterns of :func:`data_urls`/:func:`plain_text` look at it; for a Blob, its text
    without the pictures."""
    size = sum(len(link.prefix) + len(link._suffix) for link in value.links()) if isinstance(value, Blob) else len(value)
    if size > MAX_TEXT:
        raise RefusedAnswer(f"a text in the answer is longer than {MAX_TEXT // 2**10} KB")


def data_urls(value: str | Blob | None) -> list[tuple[str, bytes]]:
    """Images embedded as ``data:`` URLs, as (mime type, bytes)."""
    if value is None:
        return []
    if isinstance(value, Blob):
        # A Blob is made only of data URLs, each run whole, so each link is one image.
        return [(link.mime_type, link.data) for link in value.links() if (link.mime_type or "").startswith("image/")]
    return [(m.group(1), b64_bytes(m.group(2))) for m in _DATA_URL.finditer(value)]


def plain_text(value: str | Blob | None) -> str:
    """Text with data-URL images (and their markdown wrappers) removed."""
    if value is None:
        return ""
    if isinstance(value, Blob):
        # Same rules as for a str, with a short stand-in where each image's base64 was.
        value = "".join(link.prefix + _STAND_IN + link._suffix for link in value.links())
    return _BARE_DATA_URL.sub("", _MARKDOWN_IMAGE.sub("", value)).strip()
