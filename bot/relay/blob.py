"""Big base64 values of an answer (:class:`Blob`), and reading pictures and text out of fields.

A :class:`Blob` is what :class:`~.stream.StreamDecoder` gives in place of a long JSON string
holding base64 (a plain base64 field, or text made of ``data:image/...;base64,`` URLs): the
decoded bytes, and the text around them, so :meth:`Blob.text` rebuilds the exact string.
And what an answer may hold besides pictures (:class:`Budget`, :data:`MAX_TEXT`): past it, a
:class:`RefusedAnswer`.
"""

from __future__ import annotations

import base64
import binascii
import re
from array import array

import pybase64

from .b64run import with_breaks


class DecodeError(ValueError):
    """The body is not complete, valid JSON (e.g. truncated), or holds invalid base64."""


class RefusedAnswer(Exception):
    """The answer is past a bound (structure, size of what is not picture data, parts):
    refused, and not worth asking the same relay again."""


# A single text value longer than this is no model's words: refused before any pattern
# looks at it (each pattern is linear, but a few ms per MB add up).
MAX_TEXT = 64 * 2**10

# What an answer may hold besides picture base64. A real answer (parts, usage, grounding)
# is a few KB of structure and at most some hundred KB of text; these bound the work the
# event loop does on it: json.loads of the whole skeleton at close() and the dialect parser
# walking it.
MAX_SKELETON = 1 * 2**20
MAX_TOKENS = 64_000


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

    __slots__ = ("data", "prefix", "own_suffix", "next", "breaks")

    def __init__(self, data: bytes, prefix: str = "", suffix: str = "", next: Blob | None = None, breaks: array | None = None) -> None:
        self.data = data
        self.prefix = prefix
        self.own_suffix = suffix
        self.next = next
        # Line breaks the relay put inside the base64 (MIME style), for text() to be exact.
        self.breaks = breaks or None

    @property
    def suffix(self) -> str:
        # Only a chain pays for re-encoding here; the last (or only) link is plain text.
        return self.own_suffix if self.next is None else self.own_suffix + self.next.text()

    @property
    def mime_type(self) -> str | None:
        match = DATA_URL_PREFIX.search(self.prefix)
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
            pieces += (link.prefix, with_breaks(pybase64.b64encode(link.data).decode("ascii"), link.breaks), link.own_suffix)
        return "".join(pieces)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Blob):
            return NotImplemented
        return (self.data, self.prefix, self.own_suffix, self.next, self.breaks) == (
            other.data,
            other.prefix,
            other.own_suffix,
            other.next,
            other.breaks,
        )

    def __repr__(self) -> str:
        more = f", next={self.next!r}" if self.next is not None else ""
        return f"Blob({len(self.data)} bytes, prefix={self.prefix[-60:]!r}, suffix={self.own_suffix[:60]!r}{more})"


# The end of a text that introduces a data URL: "...data:image/png;base64,".
DATA_URL_PREFIX = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,\Z")


def b64_bytes(value: str | Blob) -> bytes:
    if isinstance(value, Blob):
        if not value.prefix and not value.own_suffix and value.next is None:
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
    size = sum(len(link.prefix) + len(link.own_suffix) for link in value.links()) if isinstance(value, Blob) else len(value)
    if size > MAX_TEXT:
        raise RefusedAnswer(f"a text in the answer is longer than {MAX_TEXT // 2**10} KB")


def data_urls(value: str | Blob | None) -> list[tuple[str, bytes]]:
    """Images embedded as ``data:`` URLs, as (mime type, bytes)."""
    if value is None:
        return []
    if isinstance(value, Blob):
        # A Blob is made only of data URLs, each run whole, so each link is one image.
        return [(mime, link.data) for link in value.links() if (mime := link.mime_type) and mime.startswith("image/")]
    return [(m.group(1), b64_bytes(m.group(2))) for m in _DATA_URL.finditer(value)]


def plain_text(value: str | Blob | None) -> str:
    """Text with data-URL images (and their markdown wrappers) removed."""
    if value is None:
        return ""
    if isinstance(value, Blob):
        # Same rules as for a str, with a short stand-in where each image's base64 was.
        value = "".join(link.prefix + _STAND_IN + link.own_suffix for link in value.links())
    return _BARE_DATA_URL.sub("", _MARKDOWN_IMAGE.sub("", value)).strip()
