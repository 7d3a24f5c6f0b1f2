"""What a picture costs (bot.pricing): default credits, a server's overrides, prices, and the
operator's limits while a server uses the shared relay."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import pricing
from bot.guild_config import ConfigError, GuildSettings
from bot.quota import QuotaExceeded, QuotaRules

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"


def test_default_costs_and_overrides() -> None:

    g = GuildSettings()
    assert [g.cost(FLASH, s) for s in ("512", "1K", "2K", "4K")] == [1, 1, 2, 4]
    assert g.cost(FLASH, None) == 1 and g.cost(FLASH, "2k") == 2  # default size; any spelling
    assert g.cost("gemini-2.5-flash-image", None) == 1
    pro = [g.cost("gemini-3-pro-image-preview", s) for s in ("1K", "2K", "4K")]
    assert pro == sorted(pro) and pro[0] > g.cost(FLASH, "1K")  # Pro costs more
    g2 = g.with_cost("nano-banana-pro", "4k", 10)
    assert g2.cost("gemini-3-pro-image-preview", "4K") == 10 and g.cost("gemini-3-pro-image-preview", "4K") == 6
    assert g2.with_cost("gemini-3-pro-image-preview", "4K", None).cost("gemini-3-pro-image-preview", "4K") == 6
    with pytest.raises(ConfigError) as info:
        g.with_cost(FLASH, "8K", 3)
    assert info.value.key == "admin.config.bad_size"


def test_canonical_size_and_the_cost_table() -> None:
    assert pricing.canonical_size(FLASH, None) == "1K" and pricing.canonical_size(FLASH, "4k") == "4K"
    assert pricing.canonical_size("gemini-2.5-flash-image", "2K") is None  # a model without sizes
    table = pricing.cost_table({pricing.table_key(PRO, "4K"): 9})
    assert table[(PRO, "4K")] == 9 and table[(FLASH, "2K")] == 2 and table[("gemini-2.5-flash-image", None)] == 1


def test_prices_default_to_list_prices_and_take_overrides() -> None:
    g = GuildSettings()
    assert g.price(FLASH, "1K") == pricing.DEFAULT_PRICES[(FLASH, "1K")] > 0
    assert g.with_price(FLASH, "1k", 0.05).price(FLASH, None) == 0.05
    assert pricing.price({}, "unknown-model", "1K") == 0.0
    with pytest.raises(ConfigError):
        g.with_price(FLASH, "1K", 500)


def test_the_operators_shared_relay_limits_tighten_a_servers_rules() -> None:
    server = QuotaRules(user_daily=None, guild_daily=50, guild_monthly=100, exempt_roles=frozenset({9}))
    assert pricing.shared_relay_rules(server, user_daily=None, guild_daily=None, guild_monthly=None) == server
    tight = pricing.shared_relay_rules(server, user_daily=5, guild_daily=80, guild_monthly=20)
    assert (tight.user_daily, tight.guild_daily, tight.guild_monthly) == (5, 50, 20)  # each the tighter one
    assert tight.exempt_roles == frozenset()  # a server role cannot lift the operator's per-member cap
    only_guild = pricing.shared_relay_rules(server, user_daily=None, guild_daily=10, guild_monthly=None)
    assert only_guild.exempt_roles == frozenset({9}) and only_guild.guild_daily == 10


async def test_the_early_check_charges_the_servers_price_under_the_operators_limits(tmp_path: Path) -> None:
    """A server on the shared relay with NB_SHARED_USER_DAILY=3: a 4K Pro picture (6 credits) is
    refused before anything is queued; the same member's 1K Flash picture (1 credit) is not."""
    from bot.services import Services
    from bot.settings import load_settings

    settings = load_settings(
        {
            "NB_ENV_FILE": str(tmp_path / "none"),
            "NB_DATA_DIR": str(tmp_path / "data"),
            "NB_RELAY_URL": "http://127.0.0.1:9",
            "NB_API_KEY": "shared-key-123456",
            "NB_SHARED_USER_DAILY": "3",
        },
        require_token=False,
    )
    services = await Services.open(settings)
    try:
        assert await services.charge(1, PRO, "4K") == (6, (await services.quota_rules(1)))
        assert (await services.quota_rules(1)).user_daily == 3
        with pytest.raises(QuotaExceeded) as info:
            await services.precheck_quota(1, 42, [], PRO, "4K")
        assert info.value.credits == 6
        await services.precheck_quota(1, 42, [], FLASH, "1K")
    finally:
        await services.close()
