"""The rules the Discord layer asks: who may delete a result, which size a request asks for
when the member picks a model, which upscale buttons a result offers."""

from __future__ import annotations

import pytest

from bot import rules
from bot.relay.catalogue import MODELS

PRO = "gemini-3-pro-image-preview"
FLASH_25 = "gemini-2.5-flash-image"


def test_the_requester_may_delete_their_result() -> None:
    assert rules.may_delete_result(7, 7, manage_messages=False)


def test_another_member_may_not_delete_a_result() -> None:
    assert not rules.may_delete_result(7, 8, manage_messages=False)


def test_a_moderator_may_delete_any_result_even_an_unknown_one() -> None:
    assert rules.may_delete_result(7, 8, manage_messages=True)
    assert rules.may_delete_result(None, 8, manage_messages=True)


def test_nobody_owns_an_unknown_result() -> None:
    assert not rules.may_delete_result(None, 8, manage_messages=False)


def test_a_size_the_member_chose_wins() -> None:
    assert rules.requested_size("4K", PRO, default_model=FLASH_25, default_size="2K") == "4K"


@pytest.mark.parametrize("model", [None, FLASH_25])
def test_the_server_default_size_applies_with_its_default_model(model: str | None) -> None:
    assert rules.requested_size(None, model, default_model=FLASH_25, default_size="2K") == "2K"


def test_another_model_gets_its_own_default_size_not_the_servers() -> None:
    assert rules.requested_size(None, PRO, default_model=FLASH_25, default_size="2K") is None
    assert rules.requested_size("", PRO, default_model=FLASH_25, default_size="2K") is None


@pytest.mark.parametrize(
    ("current", "offered"),
    [(None, ["2K", "4K"]), ("1K", ["2K", "4K"]), ("2K", ["4K"]), ("4K", []), ("9K", ["2K", "4K"])],
)
def test_upscale_offers_only_larger_sizes_the_model_has(current: str | None, offered: list[str]) -> None:
    assert rules.upscale_sizes(MODELS[PRO].sizes, current) == offered


def test_a_model_without_sizes_offers_no_upscale() -> None:
    assert MODELS[FLASH_25].sizes == ()
    assert rules.upscale_sizes(MODELS[FLASH_25].sizes, None) == []


def test_a_model_without_1k_counts_an_unknown_size_as_the_smallest() -> None:
    assert rules.upscale_sizes(("512", "2K"), None) == ["2K"]
    assert rules.upscale_sizes(("512", "2K"), "512") == ["2K"]
