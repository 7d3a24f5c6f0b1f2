"""The blocklist matcher and the Gemini safetySettings model (bot/safety/)."""

from __future__ import annotations

import re
import time

import pytest

from bot.guild_config import ConfigError
from bot.i18n import t
from bot.relay.catalogue import MAX_PROMPT_CHARS
from bot.safety import CATEGORIES, DEFAULT_THRESHOLDS, THRESHOLDS, Blocklist, SafetySettings, compile_rule, normalise

RULES = ["ass", "色情", "nud*", "bad word", "/n[a@]ked/", "*porn", "AV女优", "f**k"]


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist.parse(RULES)


def rule_of(blocklist: Blocklist, text: str) -> str | None:
    match = blocklist.check(text)
    return match.rule if match else None


@pytest.mark.parametrize(
    "prompt, rule",
    [
        ("a cute ass", "ass"),  # English, whole word
        ("A CUTE ASS", "ass"),  # mixed case
        ("Ａ ｃｕｔｅ Ａｓｓ", "ass"),  # full-width Latin
        ("ａｓｓ！", "ass"),  # full-width with full-width punctuation
        ("a\u200bss", "ass"),  # a zero-width space cannot split the word
        ("画一只猫ass", "ass"),  # a Chinese character next to it is a boundary
        ("这是色情图片", "色情"),  # Chinese: substring, no spaces needed
        ("ｎｕｄｉｔｙ in art", "nud*"),  # wildcard + full-width
        ("Nude figure", "nud*"),
        ("a bad-word here", "bad word"),  # a phrase across punctuation
        ("a BAD_WORD here", "bad word"),
        ("n@ked", "/n[a@]ked/"),  # a pattern, case-insensitive
        ("NAKED", "/n[a@]ked/"),
        ("xxxporn", "*porn"),
        ("what the fuuuck", "f**k"),  # consecutive stars are one run
        ("av女优写真", "AV女优"),  # mixed Latin + Chinese rule
    ],
)
def test_blocked_prompts_name_the_rule(blocklist: Blocklist, prompt: str, rule: str) -> None:
    assert rule_of(blocklist, prompt) == rule


@pytest.mark.parametrize(
    "prompt",
    [
        "a classy glass of water",  # "ass" inside Latin words is no match
        "an assistant at work",
        "pornography? no: 'pornx'",  # "*porn" ends at a word end: "pornx"/"pornography" differ
        "a bad idea, word",  # the phrase's words must be adjacent
        "nu de",  # wildcard stays inside one word
        "情色",  # order matters in Chinese too
        "cav女优",  # "AV" must start a word: here it ends the Latin word "cav"
        "",
    ],
)
def test_innocent_prompts_pass(blocklist: Blocklist, prompt: str) -> None:
    assert blocklist.check(prompt) is None


def test_match_reports_a_stable_rule_id_for_the_log() -> None:
    first = Blocklist.parse(["alpha", "beta"]).check("BETA")
    later = Blocklist.parse(["beta"]).check("beta")  # "alpha" removed: same id for "beta"
    assert first is not None and later is not None
    assert first.rule_id == later.rule_id and len(first.rule_id) == 10
    assert Blocklist.parse(["ＢＥＴＡ"]).check("beta").rule_id == first.rule_id  # same rule, other width


def test_normalise_folds_width_case_and_invisible_characters() -> None:
    assert normalise("ＡＢＣ ａｂｃ Straße\u00ad\ufeff①") == "abc abc strasse1"


@pytest.mark.parametrize(
    "entry, key",
    [
        ("   ", "safety.rule.empty"),
        ("***", "safety.rule.no_letters"),
        ("a*b*c*d", "safety.rule.too_many_stars"),
        ("*", "safety.rule.no_letters"),
        ("!!!", "safety.rule.no_letters"),
        ("x" * 101, "safety.rule.too_long"),
        ("/a+/", "safety.rule.regex_unbounded"),
        ("/a*b/", "safety.rule.regex_unbounded"),
        ("/a{2,}/", "safety.rule.regex_unbounded"),
        ("/a{1,9}/", "safety.rule.regex_repeat"),
        ("/(ab)?/", "safety.rule.regex_nested"),
        ("/a??/", "safety.rule.regex_nested"),
        ("/a?b?c?d?/", "safety.rule.regex_quantifiers"),
        ("/(?=x)y/", "safety.rule.regex_feature"),
        ("/(a)\\1/", "safety.rule.regex_feature"),
        ("/(?P<n>a)/", "safety.rule.regex_feature"),
        ("/[abc/", "safety.rule.bad_regex"),
        ("/(ab/", "safety.rule.bad_regex"),
    ],
)
def test_bad_rules_are_refused_with_a_translated_reason(entry: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_rule(entry)
    assert caught.value.key == key
    for locale in ("en", "zh-CN"):
        text = t(caught.value.key, locale, **caught.value.params)
        assert text != caught.value.key and not re.search(r"\{[a-z_]+\}", text)  # every field filled


def test_one_bad_entry_refuses_the_whole_list() -> None:
    with pytest.raises(ConfigError):
        Blocklist.parse(["fine", "/a+/"])
    assert len(Blocklist.parse(["fine", "", "  "])) == 1


@pytest.mark.parametrize(
    "entry, text",
    [
        ("/a?a?a?aaaaab/", "a" * MAX_PROMPT_CHARS),  # the worst the subset allows
        ("a*a*b", "a" * MAX_PROMPT_CHARS),  # two wildcards in one long word
        ("*a", ("a" * 99 + " ") * (MAX_PROMPT_CHARS // 100)),
    ],
)
def test_worst_case_prompt_is_checked_quickly(entry: str, text: str) -> None:
    blocklist = Blocklist.parse([entry])
    started = time.perf_counter()
    blocklist.check(text + "!")
    elapsed = time.perf_counter() - started
    # Measured 7-72 ms on the shared 2-core dev box; a runaway regex would take minutes.
    assert elapsed < 2.0, f"{entry!r} took {elapsed:.2f} s on a {len(text)}-character prompt"


# --- safetySettings -------------------------------------------------------------------------


def test_defaults_render_as_the_gemini_api_expects() -> None:
    rendered = SafetySettings.defaults().render()
    assert rendered == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_MEDIUM_AND_ABOVE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_MEDIUM_AND_ABOVE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "BLOCK_LOW_AND_ABOVE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_MEDIUM_AND_ABOVE"},
    ]
    # Civic integrity is deprecated by Google: not sent unless an admin sets it.
    assert set(CATEGORIES) - set(DEFAULT_THRESHOLDS) == {"HARM_CATEGORY_CIVIC_INTEGRITY"}


def test_admin_changes_one_category_by_short_name_and_stored_form_round_trips() -> None:
    changed = SafetySettings.defaults().with_threshold("sexual", "high").with_threshold("civic", "high")
    assert {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "BLOCK_ONLY_HIGH"} in changed.render()
    assert {"category": "HARM_CATEGORY_CIVIC_INTEGRITY", "threshold": "BLOCK_ONLY_HIGH"} in changed.render()
    changed = changed.with_threshold("civic", None)
    assert all(entry["category"] != "HARM_CATEGORY_CIVIC_INTEGRITY" for entry in changed.render())  # relay default
    assert SafetySettings.from_json(changed.to_json()) == changed
    assert SafetySettings.from_json(None) == SafetySettings.defaults()
    off = SafetySettings({}).with_threshold("HARM_CATEGORY_DANGEROUS_CONTENT", "OFF")
    assert off.render() == [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"}]
    assert set(THRESHOLDS) == {"BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"}


@pytest.mark.parametrize("category, threshold", [("violence", "low"), ("sexual", "maximum")])
def test_unknown_names_are_refused(category: str, threshold: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SafetySettings.defaults().with_threshold(category, threshold)
    assert caught.value.key in ("safety.bad_category", "safety.bad_threshold")
    with pytest.raises(ConfigError):
        SafetySettings.from_json({"HARM_CATEGORY_SEXUALLY_EXPLICIT": "BLOCK_ALL"})


async def test_safety_settings_reach_the_gemini_request_body_and_only_there() -> None:
    from bot.relay.client import RelayClient
    from bot.relay.types import GenerationRequest, RelayConfig
    from tests.doubles.relay_double import RelayDouble

    settings = SafetySettings.defaults().with_threshold("dangerous", "high")
    with RelayDouble(api_key="safety-test-key") as relay:
        async with RelayClient(max_attempts=1) as client:
            for dialect, auth in (("gemini", "query"), ("openai-chat", "bearer")):
                config = RelayConfig(base_url=relay.url, dialect=dialect, auth=auth, api_key="safety-test-key")  # type: ignore[arg-type]
                request = GenerationRequest(prompt="a lighthouse", safety_settings=settings.render())
                await client.generate(config, request)
        gemini_body, chat_body = (r.json for r in relay.requests)
    assert gemini_body["safetySettings"] == settings.render()
    assert {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"} in gemini_body["safetySettings"]
    assert "generationConfig" in gemini_body and "safety_settings" not in gemini_body
    assert "safetySettings" not in chat_body  # OpenAI dialects have no such field
