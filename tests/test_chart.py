"""The usage chart as an admin sees it: fonts found through fontconfig (or NB_FONT), Chinese
labels exactly when a font draws Chinese, nothing cut off, an "other" row, per-model days."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot import fonts
from bot.usage import DayUsage, UsageReport, chart_locale, nice_ticks, reason_rows, render_chart, wrap

ROOT = Path(__file__).resolve().parent.parent


def system_cjk_font() -> str | None:
    """What the system itself says, asked independently of bot.fonts."""
    if shutil.which("fc-list"):
        out = subprocess.run(["fc-list", ":lang=zh-cn", "file"], capture_output=True, text=True).stdout
        files = [line.split(":")[0] for line in out.splitlines() if line.strip()]
        return files[0] if files else None
    return None


@pytest.fixture(autouse=True)
def fresh_fonts():
    fonts.configure(None)
    fonts.reset()
    yield
    fonts.configure(None)
    fonts.reset()


def test_chinese_labels_exactly_when_the_system_has_a_cjk_font() -> None:
    expected = "zh-CN" if system_cjk_font() else "en"
    assert chart_locale("zh-CN") == expected
    assert chart_locale("en-US") == "en"


def test_without_any_cjk_font_the_chinese_chart_falls_back_to_english(tmp_path: Path) -> None:
    """A machine whose fontconfig knows no fonts at all (an empty font dir): English labels,
    and the chart still renders (Pillow's own font)."""
    if shutil.which("fc-match") is None:
        # No fontconfig at all: only the well-known paths count.
        known = [p for p in fonts._KNOWN_CJK if Path(p).is_file()]
        assert chart_locale("zh-CN") == ("zh-CN" if known else "en")
        assert len(render_chart(UsageReport(guild_id=1, start=0, end=86400), "zh-CN")) > 1000
        return
    (tmp_path / "fonts").mkdir()
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        f'<?xml version="1.0"?><fontconfig><dir>{tmp_path / "fonts"}</dir><cachedir>{tmp_path / "cache"}</cachedir></fontconfig>'
    )
    code = (
        "from bot.usage import chart_locale, render_chart, UsageReport;"
        "print(chart_locale('zh-CN'));"
        "print(len(render_chart(UsageReport(guild_id=1, start=0, end=86400), 'zh-CN')) > 1000)"
    )
    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["en", "True"]


def test_nb_font_without_chinese_glyphs_gives_english_labels_never_boxes() -> None:
    latin = fonts.find(False)
    if latin is None or (system_cjk_font() and latin.path == system_cjk_font()):
        pytest.skip("needs a font file without CJK glyphs (e.g. DejaVu); CI installs fonts-dejavu-core")
    fonts.configure(Path(latin.path))
    assert fonts.find(False) == fonts.FontFile(latin.path)
    assert chart_locale("zh-CN") == "en"


def test_nb_font_with_chinese_glyphs_is_used_for_chinese_labels() -> None:
    cjk = system_cjk_font()
    if cjk is None:
        pytest.skip("needs a CJK font (CI installs fonts-wqy-microhei)")
    fonts.configure(Path(cjk))
    assert fonts.find(True) == fonts.FontFile(cjk)
    assert chart_locale("zh-CN") == "zh-CN"


@pytest.mark.parametrize(
    "top, whole, ticks",
    [
        (1, True, [0, 1]),
        (3, True, [0, 1, 2, 3]),
        (7, True, [0, 2, 4, 6, 8]),
        (30, True, [0, 10, 20, 30]),
        (38.1, False, [0, 10, 20, 30, 40]),
        (0.4, False, [0, 0.1, 0.2, 0.3, 0.4]),
    ],
)
def test_axis_ticks_are_round_numbers_covering_the_maximum(top: float, whole: bool, ticks: list[float]) -> None:
    assert nice_ticks(top, whole=whole) == pytest.approx(ticks)


@pytest.mark.parametrize(
    "text", ["withheld by the safety filter", "backup-relay-for-the-weekend-crowd", "与受保护内容过于相似的图片被拦下", "x"]
)
def test_wrapped_labels_keep_every_character_and_fit(text: str) -> None:
    font = fonts.load(14)
    lines = wrap(text, font, 90)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing cut
    assert all(font.getlength(line) <= 90 for line in lines if len(line) > 1)


def _report(reasons: dict[str, int]) -> UsageReport:
    r = UsageReport(guild_id=1, start=0, end=86400, failures=sum(reasons.values()))
    r.failure_reasons = reasons
    return r


def test_reasons_beyond_four_are_one_other_row_with_their_sum() -> None:
    reasons = {
        "no_image:safety": 9,
        "deliver.discord_refused": 6,
        "http_503": 5,
        "timeout": 4,
        "network": 3,
        "internal": 1,
        "interrupted": 1,
    }
    rows = reason_rows(_report(reasons), "en", fonts.load(14), space=400)
    labels = [label for label, _, _ in rows]
    assert labels == ["withheld by the safety filter", "Discord refused the post", "HTTP 503", "timed out", "3 other reasons"]
    assert sum(n for _, n, _ in rows) == sum(reasons.values())
    zh = reason_rows(_report(reasons), "zh-CN", fonts.load(14), space=400)
    assert zh[-1][0] == "其他 3 种原因"


def test_a_single_remaining_reason_is_named_not_other_and_long_labels_make_room() -> None:
    five = {"no_image:safety": 5, "http_503": 4, "timeout": 3, "network": 2, "internal": 1}
    assert [n for _, n, _ in reason_rows(_report(five), "en", fonts.load(14), space=400)] == [5, 4, 3, 2, 1]
    # Little room: fewer named rows, never a row dropped from the total.
    tight = reason_rows(_report(five), "en", fonts.load(14), space=90)
    assert len(tight) < 5 and sum(n for _, n, _ in tight) == 15


def test_days_are_split_by_model_in_the_chart() -> None:
    """Two models on one day: both colours of the legend appear in that day's bar."""
    r = UsageReport(guild_id=1, start=0, end=86400, images=10)
    r.by_model = {"gemini-3-pro-image-preview": 6, "gemini-2.5-flash-image": 4}
    r.by_day = [DayUsage("1970-01-01", 10, 0, 20, dict(r.by_model))]
    img = Image.open(io.BytesIO(render_chart(r, "en"))).convert("RGB")
    bar = img.crop((100, 300, 700, 680))
    colours = {c for _, c in bar.getcolors(maxcolors=1_000_000)}
    assert (88, 101, 242) in colours and (87, 242, 135) in colours


def test_without_fontconfig_the_well_known_font_paths_are_tried(tmp_path: Path) -> None:
    """fc-match not on PATH (a minimal image): the known CJK paths decide, and the chart renders."""
    known = [p for p in fonts._KNOWN_CJK if Path(p).is_file()]
    code = (
        "import shutil; assert shutil.which('fc-match') is None;"
        "from bot.usage import chart_locale, render_chart, UsageReport;"
        "print(chart_locale('zh-CN'));"
        "print(len(render_chart(UsageReport(guild_id=1, start=0, end=86400), 'zh-CN')) > 1000)"
    )
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no fc-match, no fc-list
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["zh-CN" if known else "en", "True"]
