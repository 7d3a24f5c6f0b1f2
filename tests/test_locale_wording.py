"""The zh-CN catalogue reads as one voice: one term per concept, full-width punctuation in
Chinese text, and command names in messages as the Chinese client shows them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

LOCALES = Path(__file__).resolve().parent.parent / "bot" / "locales"
CJK = r"[\u3400-\u9fff]"


def _catalog(locale: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted((LOCALES / locale).glob("*.json")):
        out.update(json.loads(path.read_text(encoding="utf-8")))
    return out


ZH = _catalog("zh-CN")
EN = _catalog("en")


@pytest.mark.parametrize(
    ("avoid", "use"),
    [
        ("点数", "积分"),
        ("中转格式", "接口格式"),
        ("宽高比", "画面比例"),
        ("尺寸", "分辨率"),
        ("接地", "联网搜索"),
        ("已重试", "共尝试 N 次"),
        ("线程", "子区"),
        ("帖子", "子区"),
    ],
)
def test_one_term_per_concept(avoid: str, use: str) -> None:
    assert not {k: v for k, v in ZH.items() if avoid in v}, f"use {use} instead of {avoid}"


def _literal(text: str) -> str:
    """The text without {placeholders} and `code`, where ASCII punctuation is right."""
    return re.sub(r"`[^`]*`|\{[^{}]*\}", " ", text)


def test_chinese_text_uses_full_width_punctuation() -> None:
    bad = {}
    for key, text in ZH.items():
        literal = _literal(text)
        # An ASCII , : ; ! ? ( ) touching a Chinese character (a time like 16:9 or "1.5" does not).
        if re.search(rf"{CJK}[,:;!?()]|[,;!?(]{CJK}|\){CJK}", literal):
            bad[key] = text
    assert not bad, bad


def _command_mentions(text: str) -> list[str]:
    """``/管理 中转站 添加`` in code spans, and a bare ``/画图`` in running text (not URLs or
    API paths such as /v1/images)."""
    spans = re.findall(r"`/([^`]+)`", text)
    bare = re.findall(r"(?<![\w/:.])/(" + CJK + r"+)", re.sub(r"`[^`]*`", " ", text))
    return spans + bare


def test_commands_named_in_chinese_messages_are_the_chinese_command_names() -> None:
    names = {v for k, v in ZH.items() if ".cmd." in f".{k}" and not k.endswith(".desc")}
    mentioned = [(key, path) for key, text in ZH.items() for path in _command_mentions(text)]
    assert mentioned, "no command is named in any Chinese message"
    for key, path in mentioned:
        for word in path.split():
            assert word in names, f"{key}: /{path}: {word!r} is not a Chinese command name"


def test_english_commands_in_messages_are_the_english_names() -> None:
    names = {v for k, v in EN.items() if ".cmd." in f".{k}" and not k.endswith(".desc")}
    for key, text in EN.items():
        for path in re.findall(r"`/([a-z_ ]+)`", text):
            assert all(word in names for word in path.split()), (key, path)
