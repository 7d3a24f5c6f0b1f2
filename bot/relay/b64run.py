r"""Base64 runs inside JSON strings, as the stream decoder meets them.

A run's JSON text may hold ``\/`` (PHP-style encoders escape "/") and ``\n``/``\r``
(MIME encoders, and relays built on them, break base64 into 76-character lines). Here: reading
the clean base64 out of that text while recording where each break stood (so the exact string
can be rebuilt), strict decoding, and the buffer one run decodes into.
"""

from __future__ import annotations

import ctypes
import io
import os
import platform
import re
from array import array

import pybase64

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Inside a JSON string, one character of a base64 run: a plain alphabet byte, an escaped
# slash (PHP-style encoders write "/" as "\/"), or an escaped line break ("\n", "\r"): MIME
# encoders, and relays built on them, break base64 into 76-character lines.
RUN = re.compile(rb"(?:[A-Za-z0-9+/]++|\\[/nr])*+")
# Everything in a JSON string up to its closing quote or an escape cut by the chunk end.
STR_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
# A backslash that starts none of those escapes (or that ends the region, so we cannot tell yet).
OTHER_ESCAPE = re.compile(rb"\\(?![/nr])")


_RUN_ESCAPE = re.compile(rb"\\([/nr])")
_BREAK_CHARS = {b"n": 1, b"r": 0}  # what a break records beside its offset: 1 "\n", 0 "\r"


def unescape_run(text: bytes) -> tuple[bytes, list[int]]:
    r"""Base64 characters from a run's JSON text ("\/" read as "/", line breaks dropped), and
    where each dropped break stood: ``offset * 2 + kind`` in the clean text (kind 1 for
    ``\n``, 0 for ``\r``), so the exact string can be rebuilt (:func:`with_breaks`)."""
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


def with_breaks(text: str, breaks: array | None) -> str:
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


def strict_decode(text: bytes | memoryview) -> bytes:
    """Whole base64 groups (no padding) to bytes; ``binascii.Error`` on any other character.

    pybase64 (SIMD) instead of ``binascii.a2b_base64(strict_mode=True)``: measured on a 4K
    answer's 35 MB, 69 ms -> 3-9 ms, and the same refusals: ``validate=True`` raises
    ``binascii.Error`` for a byte outside the alphabet or a length that is not whole groups.
    """
    return pybase64.b64decode(text, validate=True)


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


class Run:
    """One base64 run being decoded: where its bytes go and whether it ended cleanly."""

    __slots__ = ("out", "data", "clean", "chars", "breaks")

    def __init__(self) -> None:
        if not _allocator_tuned:
            _tune_allocator()
        self.out: io.BytesIO | None = io.BytesIO()
        self.data = b""
        self.chars = 0  # base64 characters fed so far (where the next break would stand)
        self.breaks = array("q")  # see unescape_run
        # False when the run ended on a partial group (not valid base64 as it stands); the
        # string then goes back to being a str.
        self.clean = True

    def took(self, clean: bytes, breaks: list[int]) -> None:
        """Account for ``clean`` base64 characters fed, with the breaks found among them."""
        if breaks:
            base = self.chars * 2
            self.breaks.extend(base + code for code in breaks)
        self.chars += len(clean)

    def write(self, decoded: bytes) -> None:
        assert self.out is not None, "write() after finish()"
        self.out.write(decoded)

    def finish(self) -> None:
        """The run ended: its bytes move to ``data`` and the buffer goes."""
        assert self.out is not None, "finish() twice"
        self.data = self.out.getvalue()  # BytesIO hands over its buffer without a copy
        self.out = None
