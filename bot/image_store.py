"""Content-addressed image storage: each picture is kept once, named by its SHA-256.

The ``images`` table (the index) holds mime type, size, dimensions, ``last_used`` and a
``pruned`` flag; the bytes live in a :class:`Blobs` store under ``<sha[:2]>/<sha>`` (two-level
fan-out keeps directories small): :class:`bot.image_store_local.LocalBlobs`, files under ``NB_DATA_DIR/images`` (the
default), or :class:`bot.image_store_s3.S3Blobs`, objects in an S3-compatible bucket
(``NB_IMAGE_STORE=s3://bucket/prefix``). Everything below (retention, pruning) is the index's
and the same for both; :func:`open_blobs` picks the store from the settings.

- ``put`` writes the bytes once (a local store by atomic rename: a crash never leaves a
  half-written image under its final name). Storing the same bytes again writes nothing and
  only bumps ``last_used``.
- ``get`` bumps ``last_used`` too: an image that conversations keep sending back stays alive;
  retention counts from the last *use*, not from creation.
- ``prune`` removes files unused for the retention period and keeps their rows (``pruned=1``),
  so a later edit on such a turn can say "expired" instead of "unknown".
- ``prune_orphans`` does the same, after ``ORPHAN_DAYS`` already, for images nothing needs:
  no turn names them (as its picture or in its parts) and no queued or running job asks for
  them. Those are the inputs of jobs that never ran (refused, failed, cancelled): kept a day
  for the Retry button, not for the whole retention period. The references are looked up
  with reads only (WAL readers never block the writer), in batches; only the final UPDATE
  writes.

- ``prune_strays`` deletes blobs, older than ``ORPHAN_DAYS``, whose row is missing or pruned:
  a put whose row was never written, or a deletion that failed (a bucket out of reach).

File I/O, hashing and the Pillow header read run in a worker thread (they release the GIL),
never on the event loop. One asyncio lock orders ``put`` and ``prune`` in this process, so a
prune can never delete a file that a concurrent ``put`` just revived. Across processes sharing a
bucket (or a folder) the bump of an existing image is conditional (``pruned = 0``), so a put
that loses the race to a prune writes the bytes again; what is left is the window of one
deletion request, after which that image reads as expired and its next put restores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.image_store_local import LocalBlobs
from bot.store import Connection, write

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

_DAY = 86400.0
# Days an image nothing refers to is kept (see the module docstring).
ORPHAN_DAYS = 1.0


class ImagePruned(Exception):
    """The image is known but its file is gone (retention ran out, or it was lost).

    ``key``/``params`` feed the translation layer like relay errors do.
    """

    key = "conversations.image_pruned"

    def __init__(self, sha256: str) -> None:
        super().__init__(f"image {sha256} was pruned")
        self.sha256 = sha256
        self.params: dict[str, object] = {}


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    mime_type: str
    byte_size: int
    width: int | None
    height: int | None
    created_at: float
    last_used: float
    pruned: bool


def _dimensions(data: bytes) -> tuple[int | None, int | None]:
    """Width/height from the header only; an undecodable blob is still stored, just unmeasured."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None


def _hash_and_measure(data: bytes) -> tuple[str, tuple[int | None, int | None]]:
    return hashlib.sha256(data).hexdigest(), _dimensions(data)


class Blobs(Protocol):
    """Where the bytes live, named by SHA-256; the index and its rules are ImageStore's.
    A store out of reach raises OSError (as a full disk does)."""

    where: str  # for log lines: a folder or s3://bucket/prefix

    async def has(self, sha256: str, size: int) -> bool: ...
    async def write(self, sha256: str, data: bytes, mime: str) -> None: ...
    async def read(self, sha256: str, size: int) -> bytes | None: ...  # None: missing or damaged
    async def delete(self, shas: list[str]) -> None: ...
    def listing(self) -> AsyncIterator[tuple[str, float]]: ...  # (sha256, modified, Unix time)
    async def aclose(self) -> None: ...


def open_blobs(settings: Settings) -> Blobs:
    """The store ``NB_IMAGE_STORE`` names: a bucket, else files under ``NB_DATA_DIR/images``."""
    if settings.image_store is not None:
        from bot.image_store_s3 import S3Blobs

        return S3Blobs(settings.image_store)
    return LocalBlobs(settings.images_dir)


class ImageStore:
    """Images stored once by SHA-256 in ``blobs`` (a folder path: files there), indexed in the
    ``images`` table."""

    def __init__(self, db: Connection, blobs: Blobs | Path | str) -> None:
        self.db = db
        self.blobs: Blobs = LocalBlobs(blobs) if isinstance(blobs, (Path, str)) else blobs
        self._lock = asyncio.Lock()

    @property
    def root(self) -> Path:
        """The folder of a local store (tests and tools look at the files)."""
        assert isinstance(self.blobs, LocalBlobs), "not a local image store"
        return self.blobs.root

    def path_for(self, sha256: str) -> Path:
        assert isinstance(self.blobs, LocalBlobs), "not a local image store"
        return self.blobs.path_for(sha256)

    async def aclose(self) -> None:
        await self.blobs.aclose()

    async def put(self, data: bytes, mime: str) -> str:
        """Store ``data`` (if not already stored) and return its SHA-256 hex digest.

        ``mime`` is recorded the first time the bytes are seen. A row whose file was pruned,
        lost or damaged gets its file back.
        """
        if not data:
            raise ValueError("refusing to store an empty image")
        # One trip to a worker thread: the hash, and the header's size (for a new row).
        sha, (width, height) = await asyncio.to_thread(_hash_and_measure, data)
        now = time.time()
        async with self._lock:
            info = await self.info(sha)
            if info is not None and not info.pruned and await self.blobs.has(sha, len(data)):
                # Only while still unpruned: a prune elsewhere in between means writing it again.
                if await write(self.db, "UPDATE images SET last_used = ? WHERE sha256 = ? AND pruned = 0 RETURNING 1", (now, sha)):
                    return sha
            await self.blobs.write(sha, data, mime)
            if info is None:
                await write(
                    self.db,
                    "INSERT INTO images (sha256, mime_type, byte_size, width, height, created_at, last_used, pruned)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0)"
                    " ON CONFLICT (sha256) DO UPDATE SET last_used = excluded.last_used, pruned = 0",
                    (sha, mime, len(data), width, height, now, now),
                )
            else:
                await write(self.db, "UPDATE images SET last_used = ?, pruned = 0 WHERE sha256 = ?", (now, sha))
        return sha

    async def info(self, sha256: str) -> ImageInfo | None:
        # execute_fetchall: one trip to aiosqlite's thread (execute, fetch and close are three).
        rows = await self.db.execute_fetchall(
            "SELECT sha256, mime_type, byte_size, width, height, created_at, last_used, pruned FROM images WHERE sha256 = ?",
            (sha256,),
        )
        for row in rows:
            return ImageInfo(row[0], row[1], int(row[2]), row[3], row[4], float(row[5]), float(row[6]), bool(row[7]))
        return None

    async def infos(self, shas: list[str]) -> dict[str, ImageInfo]:
        """Rows for many hashes in one query (unknown hashes are simply absent)."""
        unique = list(dict.fromkeys(shas))
        out: dict[str, ImageInfo] = {}
        # Chunked: SQLite caps bound parameters (999 on old builds).
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            async with self.db.execute(
                f"SELECT sha256, mime_type, byte_size, width, height, created_at, last_used, pruned FROM images WHERE sha256 IN ({marks})",
                chunk,
            ) as cur:
                for row in await cur.fetchall():
                    out[row[0]] = ImageInfo(row[0], row[1], int(row[2]), row[3], row[4], float(row[5]), float(row[6]), bool(row[7]))
        return out

    async def get(self, sha256: str, *, touch: bool = True) -> tuple[bytes, str]:
        """``(bytes, mime)``; ``KeyError`` when never stored, ``ImagePruned`` when the file is gone.

        ``touch=False`` skips the ``last_used`` bump, for callers that bump many at once.
        """
        info = await self.info(sha256)
        if info is None:
            raise KeyError(sha256)
        if info.pruned:
            raise ImagePruned(sha256)
        data = await self.blobs.read(sha256, info.byte_size)
        if data is None:
            # Lost or damaged outside our control: record it, so the answer stays "expired"
            # and the next put of these bytes restores the file.
            log.warning("image %s is missing or damaged in %s; marking it pruned", sha256, self.blobs.where)
            await write(self.db, "UPDATE images SET pruned = 1 WHERE sha256 = ?", (sha256,))
            raise ImagePruned(sha256)
        if touch:
            await self.touch([sha256])
        return data, info.mime_type

    async def touch(self, shas: list[str], now: float | None = None) -> None:
        """Mark images as used now (restarts their retention period)."""
        when = time.time() if now is None else now
        unique = list(dict.fromkeys(shas))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            await write(self.db, f"UPDATE images SET last_used = ? WHERE pruned = 0 AND sha256 IN ({marks})", [when, *chunk])

    async def prune(self, older_than_days: float, now: float | None = None) -> int:
        """Delete files not used for ``older_than_days``; mark their rows pruned. Returns the count."""
        if older_than_days < 0:
            raise ValueError("older_than_days must not be negative")
        cutoff = (time.time() if now is None else now) - older_than_days * _DAY
        async with self._lock:
            rows = await write(self.db, "UPDATE images SET pruned = 1 WHERE pruned = 0 AND last_used < ? RETURNING sha256", (cutoff,))
            shas = [row[0] for row in rows]
            await self._delete(shas)
        if shas:
            log.info("pruned %d image(s) unused for %.1f days", len(shas), older_than_days)
        return len(shas)

    async def prune_orphans(self, older_than_days: float = ORPHAN_DAYS, now: float | None = None) -> int:
        """Delete files unused for ``older_than_days`` that no turn and no waiting job refers
        to; mark their rows pruned. Returns the count."""
        cutoff = (time.time() if now is None else now) - older_than_days * _DAY
        async with self.db.execute("SELECT sha256 FROM images WHERE pruned = 0 AND last_used < ?", (cutoff,)) as cur:
            candidates = [row[0] for row in await cur.fetchall()]
        orphans: list[str] = []
        for start in range(0, len(candidates), 200):
            chunk = candidates[start : start + 200]
            marks = ",".join("(?)" for _ in chunk)
            # A sha256 is 64 hex digits: it cannot appear in a JSON text by accident, and holds
            # no LIKE wildcard (LIKE, unlike instr/strpos, means the same on both backends).
            async with self.db.execute(
                f"WITH c(sha) AS (VALUES {marks}) SELECT sha FROM c WHERE"
                " NOT EXISTS (SELECT 1 FROM turns t WHERE t.image_sha256 = c.sha"
                "   OR t.user_parts LIKE '%' || c.sha || '%' OR t.model_parts LIKE '%' || c.sha || '%')"
                " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status IN ('queued', 'running', 'delivering') AND j.request LIKE '%' || c.sha || '%')",
                chunk,
            ) as cur:
                orphans += [row[0] for row in await cur.fetchall()]
        removed: list[str] = []
        async with self._lock:  # a put() of the same bytes in between revives the image: skip it
            for start in range(0, len(orphans), 500):
                chunk = orphans[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = await write(
                    self.db,
                    f"UPDATE images SET pruned = 1 WHERE pruned = 0 AND last_used < ? AND sha256 IN ({marks}) RETURNING sha256",
                    [cutoff, *chunk],
                )
                removed += [row[0] for row in rows]
            await self._delete(removed)
        if removed:
            log.info("pruned %d image(s) no turn or waiting job refers to", len(removed))
        return len(removed)

    async def prune_these(self, shas: list[str]) -> int:
        """Prune the named images now (their rows stay, marked pruned). Returns the count."""
        removed: list[str] = []
        async with self._lock:
            for start in range(0, len(shas), 500):
                chunk = shas[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = await write(
                    self.db, f"UPDATE images SET pruned = 1 WHERE pruned = 0 AND sha256 IN ({marks}) RETURNING sha256", chunk
                )
                removed += [row[0] for row in rows]
            await self._delete(removed)
        if removed:
            log.info("pruned %d image(s) over their server's storage cap", len(removed))
        return len(removed)

    async def _delete(self, shas: list[str]) -> None:
        """Delete blobs whose rows are already marked pruned. A failure is logged, not raised:
        the rows say "expired" either way, and :meth:`prune_strays` deletes them later."""
        if not shas:
            return
        try:
            await self.blobs.delete(shas)
        except OSError as exc:
            log.error("image store %s: %s; they are deleted at a later pruning", self.blobs.where, exc)

    async def prune_strays(self, older_than_days: float = ORPHAN_DAYS, now: float | None = None) -> int:
        """Delete blobs modified over ``older_than_days`` ago whose row is missing or pruned
        (a put whose row was never written; a deletion that failed). Returns the count. So a
        folder or bucket prefix belongs to one bot database (README: ``NB_IMAGE_STORE``)."""
        cutoff = (time.time() if now is None else now) - older_than_days * _DAY
        old: list[str] = []
        async for sha, modified in self.blobs.listing():
            if modified < cutoff:
                old.append(sha)
        strays: list[str] = []
        async with self._lock:
            for start in range(0, len(old), 500):
                chunk = old[start : start + 500]
                marks = ",".join("?" * len(chunk))
                live = await self.db.execute_fetchall(f"SELECT sha256 FROM images WHERE pruned = 0 AND sha256 IN ({marks})", chunk)
                kept = {row[0] for row in live}
                strays += [sha for sha in chunk if sha not in kept]
            await self._delete(strays)
        if strays:
            log.info("deleted %d stored picture(s) the index no longer keeps", len(strays))
        return len(strays)
