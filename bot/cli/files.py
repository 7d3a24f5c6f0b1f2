"""The CLI's output files: where the picture goes (``--out``), checked before anything is
sent, and written atomically."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ..relay import images as relay_images


def suffixes(mime: str) -> tuple[str, ...]:
    return {"image/jpeg": (".jpg", ".jpeg", ".jpe"), "image/png": (".png",), "image/webp": (".webp",)}.get(
        mime, (relay_images.extension_for(mime),)
    )


def default_name(mime: str, folder: Path | None = None) -> Path:
    folder = folder or Path.cwd()
    stem = "nano-banana-" + time.strftime("%Y%m%d-%H%M%S")
    ext = relay_images.extension_for(mime)
    candidate = folder / f"{stem}{ext}"
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{ext}"
        n += 1
    return candidate


def output_path(raw: str | None) -> tuple[Path | None, Path | None, str | None]:
    """(file, folder, problem): ``--out`` names a file, or a folder where the file name is
    chosen once the answer's mime type is known; checked before anything is sent."""
    if not raw:
        return None, None, None
    path = Path(raw).expanduser()
    if path.is_dir():
        if not _writable(path):
            return None, None, f"{path} is not writable"
        return None, path, None
    if raw.endswith(("/", os.sep)):
        if path.exists():
            return None, None, "it is a file, not a folder"
        return None, path, None
    parent = path.parent
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return None, None, f"{probe} is not a folder"
    if not _writable(probe):
        return None, None, f"{probe} is not writable"
    return path, None, None


def _writable(folder: Path) -> bool:
    """Whether a file can really be made in ``folder``: tried, not asked (os.access says yes
    to root everywhere, /proc included, and the relay would be paid before the write fails)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nb-check-", dir=str(folder))
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".nb-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
