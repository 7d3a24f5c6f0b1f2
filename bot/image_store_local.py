"""Image bytes as files under a folder (``NB_DATA_DIR/images``, the default store), named by
SHA-256 under ``<sha[:2]>/<sha>``: the :class:`bot.image_store.Blobs` a single machine needs.

A write goes to a temp file in the target folder, fsynced, then renamed into place (one
filesystem, so atomic): a crash never leaves a half-written image under its final name. A read
hands back bytes only while they still hash to their name. All file I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file sits in the same folder, so the rename stays on one filesystem (atomic).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _file_matches(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _read_verified(path: Path, sha256: str) -> bytes | None:
    """The file's bytes if they still hash to their name; None when missing or damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    return data


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _files(root: Path) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for path in root.glob("??/*"):
        sha = path.name
        if len(sha) == 64 and sha[:2] == path.parent.name and all(c in "0123456789abcdef" for c in sha):
            try:
                out.append((sha, path.stat().st_mtime))
            except FileNotFoundError:
                pass
    return out


class LocalBlobs:
    """Files under ``root`` (``NB_DATA_DIR/images``), written by atomic rename."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.where = str(self.root)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    async def has(self, sha256: str, size: int) -> bool:
        return await asyncio.to_thread(_file_matches, self.path_for(sha256), size)

    async def write(self, sha256: str, data: bytes, mime: str) -> None:
        await asyncio.to_thread(_write_atomic, self.path_for(sha256), data)

    async def read(self, sha256: str, size: int) -> bytes | None:
        return await asyncio.to_thread(_read_verified, self.path_for(sha256), sha256)

    async def delete(self, shas: list[str]) -> None:
        await asyncio.to_thread(_unlink_all, [self.path_for(s) for s in shas])

    async def listing(self) -> AsyncIterator[tuple[str, float]]:
        for item in await asyncio.to_thread(_files, self.root):
            yield item

    async def aclose(self) -> None:
        pass
