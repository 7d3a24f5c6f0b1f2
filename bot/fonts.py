"""Which font files the usage chart draws with: ``NB_FONT``, else fontconfig, else known paths.

fontconfig (``fc-list`` / ``fc-match``) knows every font the system has, wherever the
distribution put it, and which languages each covers; asking it for ``:lang=zh-cn`` finds an
installed CJK font whatever its file name. Without fontconfig (a minimal image, macOS,
Windows) a short list of well-known paths is tried. A font is used for Chinese only if it
really has the glyphs (checked by drawing them), so a wrong ``NB_FONT`` gives English labels,
never boxes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

log = logging.getLogger(__name__)

_KNOWN_CJK = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
_KNOWN_LATIN = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)
_PROBE = "中文字体"
_FC_TIMEOUT_S = 10.0

_override: Path | None = None


@dataclass(frozen=True)
class FontFile:
    path: str
    index: int = 0  # the face inside a .ttc collection (fontconfig says which one is the SC face)


def configure(font: Path | None) -> None:
    """The operator's ``NB_FONT`` (``Settings.font``); ``None``: discover."""
    global _override
    if font != _override:
        _override = font
        reset()


def reset() -> None:
    """Forget what was found (tests; after fonts are installed)."""
    for cached in (find, load, _fontconfig):
        cached.cache_clear()


def _has_glyphs(font: FontFile, text: str) -> bool:
    """Whether ``font`` draws ``text`` with real glyphs: each character must differ from the
    font's "missing glyph" box, which is what a private-use code point renders as."""
    try:
        face = ImageFont.truetype(font.path, 32, index=font.index)
    except OSError:
        return False

    def drawn(ch: str) -> tuple[tuple[int, int], bytes]:
        mask = face.getmask(ch)
        return mask.size, bytes(mask)

    missing = drawn("\ue000")
    return all(drawn(ch) != missing for ch in text)


@lru_cache(maxsize=4)
def _fontconfig(pattern: str) -> tuple[FontFile, ...] | None:
    """Fonts matching ``pattern``, best first (fc-match's order); ``None`` without fontconfig."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        out = subprocess.run(
            [fc_match, "--sort", "--format", "%{file}\t%{index}\t%{lang}\n", pattern],
            capture_output=True,
            text=True,
            timeout=_FC_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("fontconfig failed (%s); trying known font paths", exc)
        return None
    found: list[FontFile] = []
    want_lang = pattern.partition("lang=")[2].split(":")[0].lower()
    for line in out.splitlines():
        path, _, rest = line.partition("\t")
        index, _, langs = rest.partition("\t")
        # --sort lists every font, best first; keep those that claim the language asked for.
        if want_lang and want_lang not in langs.lower().split("|"):
            continue
        if path.lower().endswith((".ttf", ".otf", ".ttc", ".otc")):
            found.append(FontFile(path, int(index) if index.isdigit() else 0))
    return tuple(found)


@lru_cache(maxsize=2)
def find(cjk: bool) -> FontFile | None:
    """The font for chart text; with ``cjk``, one that draws Chinese (or ``None``)."""
    if _override is not None:
        chosen = FontFile(str(_override))
        if not cjk or _has_glyphs(chosen, _PROBE):
            return chosen
        log.warning("NB_FONT=%s has no Chinese glyphs; Chinese charts use English labels", _override)
        return None
    listed = _fontconfig(":lang=zh-cn" if cjk else "sans-serif:lang=en")
    candidates = list(listed) if listed is not None else [FontFile(p) for p in (_KNOWN_CJK if cjk else _KNOWN_LATIN) if Path(p).is_file()]
    for candidate in candidates[:8]:
        if not cjk or _has_glyphs(candidate, _PROBE):
            return candidate
    # A CJK font also draws Latin text: use it when no Latin font is found.
    return find(True) if not cjk else None


@lru_cache(maxsize=64)
def load(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font of ``size`` px: the CJK one when there is one (it draws Latin too), else Latin,
    else Pillow's built-in font."""
    font = find(True) or find(False)
    if font is not None:
        try:
            return ImageFont.truetype(font.path, size, index=font.index)
        except OSError as exc:
            log.warning("cannot load font %s (%s); using Pillow's built-in font", font.path, exc)
    return ImageFont.load_default(size=size)
