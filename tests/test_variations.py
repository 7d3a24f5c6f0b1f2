"""Vary prompts and variant fan-out: what a member gets when they click Vary or ask for N."""

from __future__ import annotations

import pytest

from bot.i18n import t
from bot.preferences import ServerCreative
from bot.relay.catalogue import MAX_PROMPT_CHARS
from bot.studio import JobRequest
from bot.variations import STRENGTHS, VariantError, fan_out, total_cost, variant_count, vary_prompt

FLASH = "gemini-3.1-flash-image-preview"


def test_subtle_and_strong_differ_and_carry_the_original_prompt() -> None:
    subtle, strong = (vary_prompt(s, "a red fox in snow") for s in STRENGTHS)
    assert subtle != strong
    assert "subtle" in subtle and "strong" in strong
    assert subtle.endswith("a red fox in snow") and strong.endswith("a red fox in snow")
    assert "made from" not in vary_prompt("subtle", "   ")  # no prompt (an edited upload): the instruction alone


def test_a_huge_original_prompt_still_fits_the_model() -> None:
    assert len(vary_prompt("strong", "x" * MAX_PROMPT_CHARS)) <= MAX_PROMPT_CHARS


def test_an_unknown_strength_is_a_translated_refusal() -> None:
    with pytest.raises(VariantError) as caught:
        vary_prompt("wild")
    assert t(caught.value.key, "zh-CN", **caught.value.params) == "没有名为“wild”的变化方式。"


def test_the_count_defaults_to_the_servers_and_stops_at_its_maximum() -> None:
    server = ServerCreative(variants_default=2, variants_max=3)
    assert variant_count(None, server) == 2
    assert variant_count(3, server) == 3
    with pytest.raises(VariantError) as caught:
        variant_count(4, server)
    assert caught.value.key == "variants.over_max"
    assert t(caught.value.key, "en", **caught.value.params) == "This server allows at most 3 variants at once, not 4. Nothing was charged."
    for bad in (0, 5):
        with pytest.raises(VariantError) as caught:
            variant_count(bad, ServerCreative())
        assert caught.value.key == "variants.bad_count"


def test_fan_out_makes_independent_requests_numbered_for_the_member() -> None:
    request = JobRequest(prompt="a heron", model=FLASH, aspect_ratio="16:9", size="2K", images=["a" * 64])
    variants = fan_out(request, 4)
    assert [(v.index, v.of) for v in variants] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(v.request == request for v in variants)
    variants[0].request.images.append("b" * 64)
    assert variants[1].request.images == ["a" * 64] and request.images == ["a" * 64]
    assert total_cost(2, len(variants)) == 8
    with pytest.raises(VariantError):
        fan_out(request, 5)
