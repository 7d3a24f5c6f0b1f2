"""The pure decisions in bot.rules: access, the thread-continue rule, job caps."""

from __future__ import annotations

from bot import rules
from bot.guild_config import GuildSettings
from bot.relay.answer import no_image
from bot.relay.types import RelayFailed


def test_an_empty_allow_list_allows_everything() -> None:
    assert rules.channel_allowed(frozenset(), 1) and rules.member_allowed(frozenset(), []) and rules.model_allowed((), "any")
    assert (
        rules.access_refusal(
            allowed_channels=frozenset(), allowed_roles=frozenset(), allowed_models=(), channel_id=1, parent_id=None, role_ids=[], model="m"
        )
        is None
    )


def test_a_thread_counts_as_its_parent_channel() -> None:
    allowed = frozenset({5})
    assert rules.channel_allowed(allowed, 5)
    assert rules.channel_allowed(allowed, 99, parent_id=5)  # a thread of channel 5
    assert not rules.channel_allowed(allowed, 99) and not rules.channel_allowed(allowed, 99, parent_id=6)


def test_roles_and_models() -> None:
    assert rules.member_allowed({7, 8}, [1, 8]) and not rules.member_allowed({7}, [1, 2]) and not rules.member_allowed({7}, [])
    assert rules.model_allowed(("a",), "a") and not rules.model_allowed(("a",), "b")


def test_the_first_refusal_is_the_one_a_member_sees() -> None:
    def refusal(channel_id: int | None, roles: list[int], model: str) -> str | None:
        return rules.access_refusal(
            allowed_channels={5},
            allowed_roles={7},
            allowed_models=("m",),
            channel_id=channel_id,
            parent_id=None,
            role_ids=roles,
            model=model,
        )

    assert refusal(1, [1], "x") == "access.channel"
    assert refusal(5, [1], "x") == "access.role"
    assert refusal(5, [7], "x") == "access.model"
    assert refusal(5, [7], "m") is None
    assert refusal(None, [7], "m") is None  # outside a channel, channels do not apply


def test_who_may_continue_a_thread() -> None:
    assert rules.may_continue_thread("requester", 1, owner_id=1)
    assert not rules.may_continue_thread("requester", 2, owner_id=1)
    assert rules.may_continue_thread("anyone", 2, owner_id=1)
    # The settings and the services' Defaults ask the same rule.
    anyone = GuildSettings().with_access(thread_mode="anyone")
    assert rules.may_continue_thread(anyone.thread_mode, 2, owner_id=1) and not rules.may_continue_thread(
        GuildSettings().thread_mode, 2, owner_id=1
    )


def test_a_server_only_lowers_the_operators_job_caps() -> None:
    assert rules.job_caps(4, 2, None, None) == (4, 2)
    assert rules.job_caps(4, 2, 1, 5) == (1, 2)  # 5 per member cannot raise the operator's 2
    assert rules.job_caps(4, 2, 0, 0) == (1, 1)  # at least one job always runs


def test_a_replayed_history_leaves_out_the_oldest_exchanges_first() -> None:
    assert rules.oldest_left_out([], 10) == 0
    assert rules.oldest_left_out([3, 3, 3], 10) == 0  # all fit
    assert rules.oldest_left_out([5, 3, 3], 10) == 1  # the oldest goes
    assert rules.oldest_left_out([1, 9, 3], 10) == 2  # whole exchanges: not the 1 behind the 9
    assert rules.oldest_left_out([1, 1, 50], 10) == 2  # the newest always stays, even alone too big


def test_retry_is_offered_after_bad_luck_not_after_a_refusal() -> None:
    overloaded = RelayFailed("HTTP 503", status=503, retryable=True)
    assert rules.retry_offered(retryable=overloaded.retryable)
    assert rules.retry_offered(retryable=overloaded.retryable, status=overloaded.status)
    assert rules.retry_offered(retryable=True, status=None)  # a timeout, the network
    assert not rules.retry_offered(retryable=True, status=401)  # failover tries elsewhere; a bad key stays bad
    assert not rules.retry_offered(retryable=RelayFailed("HTTP 400", status=400).retryable, status=400)
    for reason, offered in (("no_image", True), ("text_only", True), ("blocked", False), ("safety", False), ("recitation", False)):
        assert rules.retry_offered(no_image_reason=no_image(reason).reason) is offered, reason
    assert not rules.retry_offered()
