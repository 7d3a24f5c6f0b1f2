"""Reading a relay's body under a byte budget, decompressing it ourselves.

Why not httpx's own decoding (``aiter_bytes``): httpx inflates each raw chunk in one call,
``zlib.decompressobj().decompress(chunk)`` without a length limit, before any caller can
count the output. 64 KiB of gzip can stand for 64 MiB of zeros (deflate reaches ~1032:1), and
a header ``Content-Encoding: gzip, gzip`` makes httpx stack two decoders, so a 3.5 KB body
measured 4.1 GB of RSS before a byte reached the size check.

Here the raw bytes (``aiter_raw``: transfer-encoding removed, content-encoding kept) are
inflated with ``decompress(data, max_length)``: each call returns at most :data:`PIECE` bytes
and keeps the rest of its input in ``unconsumed_tail``, so memory stays near one piece and
the budget is checked before anything grows. Accepted encodings: none/``identity``, or one
layer of ``gzip``/``x-gzip``/``deflate``, which are also all we ask for in
``Accept-Encoding`` (:data:`ACCEPT_ENCODING`). Anything else - ``br`` or ``zstd`` we did not
ask for, two layers, an unknown name - is refused: no relay needs it, and each extra layer
multiplies the expansion.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

# What we tell relays we take. (br would need a decoder that can be bounded the same way;
# none is a dependency, so it is not offered.)
ACCEPT_ENCODING = "gzip, deflate"
# Output per decompress() call: small enough that each step is well under a millisecond.
PIECE = 64 * 1024

_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS


class TooBig(Exception):
    """The body (decompressed) grew past its budget."""


class RefusedEncoding(Exception):
    """A ``Content-Encoding`` we do not accept: stacked, unknown or never asked for."""


def encodings(response: httpx.Response) -> list[str]:
    """The content codings applied to the body, outermost last, ``identity`` left out."""
    values = response.headers.get_list("content-encoding", split_commas=True)
    return [v.strip().lower() for v in values if v.strip() and v.strip().lower() != "identity"]


class _Inflater:
    """One layer of gzip or deflate, inflated in bounded pieces."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._wbits = _GZIP if coding in ("gzip", "x-gzip") else _ZLIB
        self._d = zlib.decompressobj(self._wbits)
        self._first = True

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Inflate ``data`` piece by piece: nothing more is inflated until the caller takes
        the piece before, so at most one piece per layer is alive at a time."""
        while data:
            try:
                out = self._d.decompress(data, PIECE)
            except zlib.error:
                if self._first and self._wbits == _ZLIB:
                    # "deflate" is often sent raw, without the zlib header (as httpx allows too).
                    self._wbits = _RAW
                    self._d = zlib.decompressobj(_RAW)
                    self._first = False
                    continue
                raise httpx.DecodingError(f"the {self.coding} body is corrupt") from None
            self._first = False
            if out:
                yield out
            if self._d.eof:
                rest = self._d.unused_data
                if rest and self._wbits == _GZIP:
                    # Concatenated gzip members are one gzip stream (RFC 1952 §2.2).
                    self._d = zlib.decompressobj(self._wbits)
                    data = rest
                    continue
                return  # trailing garbage after the stream: ignored, as zlib and httpx do
            data = self._d.unconsumed_tail

    def flush(self) -> Iterator[bytes]:
        """Output zlib still holds after the last input (a piece can end exactly at PIECE)."""
        while not self._d.eof:
            out = self._d.decompress(b"", PIECE)
            if not out:
                break
            yield out


async def body_pieces(response: httpx.Response, budget: int) -> AsyncIterator[bytes]:
    """The body, decompressed, in pieces of at most ~:data:`PIECE` bytes (raw chunks for an
    uncompressed body); raises :class:`TooBig` once more than ``budget`` bytes came out, and
    :class:`RefusedEncoding` for an encoding we did not ask for."""
    codings = encodings(response)
    if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
        raise RefusedEncoding(", ".join(codings))
    inflater = _Inflater(codings[0]) if codings else None
    total = 0
    async for raw in response.aiter_raw():
        for piece in inflater.feed(raw) if inflater is not None else (raw,):
            total += len(piece)
            if total > budget:
                raise TooBig()
            yield piece
    if inflater is not None:
        for piece in inflater.flush():
            total += len(piece)
            if total > budget:
                raise TooBig()
            yield piece


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """At most ``cap`` bytes of the (decompressed) body; the rest is not read into memory.
    For error bodies, where the start is all we show."""
    chunks: list[bytes] = []
    total = 0
    try:
        async for piece in body_pieces(response, cap + PIECE):
            room = cap - total
            if room <= 0:
                break
            chunks.append(piece[:room])
            total += min(room, len(piece))
    except (TooBig, RefusedEncoding, httpx.DecodingError):
        pass  # an error body we cannot read whole still says nothing more useful
    return b"".join(chunks)
