from __future__ import annotations

import pytest

from bot.relay.types import InvalidRequest
from bot.urlguard import UnsafeURL, check_url, make_guard

# A resolver with fixed answers, standing in for DNS (the machine has no internet). Names not
# listed fail the way getaddrinfo does.
DNS = {
    "relay.example": ["93.184.216.34"],
    "dual.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "private.example": ["10.0.0.5"],
    "sneaky.example": ["93.184.216.34", "192.168.1.20"],  # one bad answer among good ones
    "v6private.example": ["fd12:3456::1"],
    "meta.example": ["169.254.169.254"],
    "localhost": ["127.0.0.1", "::1"],
    "api.localhost": ["127.0.0.1"],
}


async def fake_dns(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    raise OSError(-2, "Name or service not known")


REFUSED = [
    # (url, reason when guarded, lifted by NB_ALLOW_PRIVATE_RELAYS?)
    ("http://relay.example/", "scheme", True),
    ("ftp://relay.example/", "scheme", False),
    ("https://127.0.0.1/", "private_address", True),
    ("https://127.8.9.10:8443/v1beta", "private_address", True),
    ("https://localhost/", "private_address", True),
    ("https://api.localhost/", "private_address", True),
    ("https://10.1.2.3/", "private_address", True),
    ("https://172.16.0.1/", "private_address", True),
    ("https://172.31.255.254/", "private_address", True),
    ("https://192.168.1.1/", "private_address", True),
    ("https://100.64.0.1/", "private_address", True),  # carrier-grade NAT
    ("https://169.254.1.1/", "private_address", True),  # link-local
    ("https://224.0.0.251/", "private_address", True),  # multicast
    ("https://0.0.0.0/", "private_address", True),
    ("https://240.0.0.1/", "private_address", True),  # reserved
    ("https://[::1]/", "private_address", True),
    ("https://[::]/", "private_address", True),
    ("https://[fc00::1]/", "private_address", True),
    ("https://[fd12:3456::1]/", "private_address", True),
    ("https://[fe80::1]/", "private_address", True),
    ("https://[ff02::1]/", "private_address", True),
    ("https://[::ffff:127.0.0.1]/", "private_address", True),  # IPv4-mapped loopback
    ("https://[::ffff:10.0.0.1]/", "private_address", True),
    ("https://[::ffff:192.168.0.1]/", "private_address", True),
    ("https://[64:ff9b::a00:1]/", "private_address", True),  # NAT64 of 10.0.0.1
    ("https://[2002:c0a8:0101::1]/", "private_address", True),  # 6to4 of 192.168.1.1
    ("https://2130706433/", "private_address", True),  # 127.0.0.1 as one decimal number
    ("https://0x7f.1/", "private_address", True),
    ("https://private.example/", "private_address", True),  # a name resolving inside
    ("https://sneaky.example/", "private_address", True),
    ("https://v6private.example/", "private_address", True),
    ("https://169.254.169.254/latest/meta-data/", "metadata", False),
    ("https://[::ffff:169.254.169.254]/", "metadata", False),
    ("https://[fd00:ec2::254]/", "metadata", False),
    ("https://metadata.google.internal/computeMetadata/v1/", "metadata", False),
    ("https://meta.example/", "metadata", False),  # a name resolving to the metadata address
    ("https://user:pass@relay.example/", "credentials", False),
    ("https:///nohost", "no_host", False),
    ("not a url", "scheme", False),
    ("https://does-not-exist.example/", "unresolvable", False),
]


@pytest.mark.parametrize(("url", "reason", "liftable"), REFUSED, ids=[u for u, _, _ in REFUSED])
async def test_unsafe_urls_are_refused(url: str, reason: str, liftable: bool) -> None:
    with pytest.raises(UnsafeURL) as info:
        await check_url(url, allow_private=False, resolver=fake_dns)
    assert info.value.reason == reason
    # Admins see a translated explanation: every reason has a message.
    assert info.value.key == f"admin.urlguard.{reason}"
    assert isinstance(info.value, InvalidRequest)


@pytest.mark.parametrize(("url", "reason", "liftable"), [r for r in REFUSED if r[2]], ids=[u for u, _, lift in REFUSED if lift])
async def test_operator_can_lift_the_address_and_scheme_checks(url: str, reason: str, liftable: bool) -> None:
    await check_url(url, allow_private=True, resolver=fake_dns)


@pytest.mark.parametrize(("url", "reason", "liftable"), [r for r in REFUSED if not r[2]], ids=[u for u, _, lift in REFUSED if not lift])
async def test_metadata_credentials_and_garbage_stay_refused_when_lifted(url: str, reason: str, liftable: bool) -> None:
    with pytest.raises(UnsafeURL) as info:
        await check_url(url, allow_private=True, resolver=fake_dns)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "https://relay.example",
        "https://relay.example/v1beta",
        "https://RELAY.example.:443/v1",
        "https://dual.example/",
        "https://93.184.216.34/",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        "https://[::ffff:93.184.216.34]/",
    ],
)
async def test_public_https_urls_pass(url: str) -> None:
    await check_url(url, allow_private=False, resolver=fake_dns)


async def test_real_resolver_refuses_localhost_and_numeric_tricks() -> None:
    # The system resolver (getaddrinfo, off the loop) on names that need no network.
    for url in ("https://localhost:8443/", "https://127.1/", "https://2130706433/"):
        with pytest.raises(UnsafeURL):
            await check_url(url, allow_private=False)
    await check_url("http://127.0.0.1:9/", allow_private=True)


async def test_guard_rechecks_on_every_call_so_a_changed_answer_is_caught() -> None:
    """DNS rebinding between saving a relay and using it: the guard runs per request."""
    answers = {"flip.example": ["93.184.216.34"]}

    async def changing_dns(host: str, port: int) -> list[str]:
        return answers[host]

    guard = make_guard(False, resolver=changing_dns)
    await guard("https://flip.example/v1beta/models/x:generateContent")
    answers["flip.example"] = ["127.0.0.1"]
    with pytest.raises(UnsafeURL) as info:
        await guard("https://flip.example/v1beta/models/x:generateContent")
    assert info.value.address == "127.0.0.1"
