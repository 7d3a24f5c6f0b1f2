"""English says "1 credit" and "2 credits": plural fields in the catalog, picked by t()."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from bot.i18n import t

LOCALES = Path(__file__).resolve().parent.parent / "bot" / "locales"


def _texts(locale: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted((LOCALES / locale).glob("*.json")):
        out.update(json.loads(path.read_text(encoding="utf-8")))
    return out


@pytest.mark.parametrize(
    ("key", "params", "one", "many"),
    [
        ("jobs.cancelled", {"credits": 1}, "Your 1 credit was refunded.", "Your 2 credits were refunded."),
        ("admin.quota.credits", {"credits": 1}, "1 credit", "2 credits"),
        (
            "quota.held",
            {"held": 1},
            "1 credit is held by your queued or running pictures; it comes back",
            "2 credits are held by your queued or running pictures; they come back",
        ),
        ("usage.summary.user", {"user": 7, "images": 1, "credits": 1}, "(1 picture, 1 credit)", "(2 pictures, 2 credits)"),
    ],
)
def test_english_picks_singular_for_one_and_plural_otherwise(key: str, params: dict[str, int], one: str, many: str) -> None:
    assert one in t(key, "en", **params)
    assert many in t(key, "en", **{k: (2 if k != "user" else v) for k, v in params.items()})


def test_the_counts_given_as_text_pick_the_same_form() -> None:
    # Some callers pass already-formatted numbers (quota limits): "1" is still one.
    assert t("admin.quota.credits", "en", credits="1") == "1 credit"


def test_no_english_text_hedges_with_s_in_brackets_and_chinese_has_no_plural_fields() -> None:
    en = _texts("en")
    assert not [k for k, v in en.items() if "(s)" in v]
    for key, text in _texts("zh-CN").items():
        specs = [spec for _, field, spec, _ in string.Formatter().parse(text) if field is not None and spec]
        assert not any("|" in s for s in specs), key
    for key, text in en.items():
        for _, _field, spec, _ in string.Formatter().parse(text):
            if spec and "|" in spec:
                assert spec.count("|") == 1 and re.fullmatch(r"[^|{}]+\|[^|{}]+", spec), (key, spec)
