"""End to end through the real bot, the Discord double and relay doubles: one server's hung
relays are not felt by another server (issue: 10 black-hole relays on two servers)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bot.relays.pool import job_deadline
from tests import e2e
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble

API_KEY = "relay-secret-key-123456"
ATTEMPT_S = 1.0  # the per-attempt allowance here (4K's is 20 min; the rule is the same)


async def test_a_third_server_starts_within_one_slot_time_while_two_servers_relays_hang(tmp_path: Path) -> None:
    holes = [RelayDouble(api_key="hole-key-0123456789") for _ in range(10)]
    for hole in holes:
        hole.default = Behaviour("hang")
    try:
        with RelayDouble(api_key=API_KEY) as good:
            good.default = Behaviour("image", width=64, height=64)
            async with DiscordDouble() as dd:
                bot = e2e.new_bot(good, tmp_path / "data", API_KEY, NB_MAX_JOBS="4", NB_ALLOW_PRIVATE_RELAYS="1")
                async with dd.running(bot):
                    svc = bot.services
                    svc.relay_client.timeout = ATTEMPT_S
                    slot_time = job_deadline("1K", ATTEMPT_S)
                    servers = []
                    for label, hole_set in (("A", holes[:5]), ("B", holes[5:]), ("C", [])):
                        guild = dd.add_guild(f"server {label}")
                        channel = dd.text_channels(guild)[0]
                        members = [dd.add_member(guild, username=f"{label.lower()}{i}") for i in range(3)]
                        for i, hole in enumerate(hole_set):
                            await svc.relays.add(
                                int(guild["id"]), name=f"hole{i}", base_url=hole.url, api_key="hole-key-0123456789", auth="query"
                            )
                        servers.append((guild, channel, members))
                    await asyncio.sleep(0.3)  # the GUILD_CREATEs reach the bot

                    async def imagine(server: int, member: int, prompt: str) -> None:
                        _, channel, members = servers[server]
                        payload = dd.slash_interaction("imagine", channel=channel, user=members[member], options={"prompt": prompt})
                        await dd.interact(payload)

                    # A and B: three members each ask; two jobs of each take all four slots.
                    for member in range(3):
                        await imagine(0, member, f"A picture {member}")
                        await imagine(1, member, f"B picture {member}")
                    loop = asyncio.get_running_loop()
                    end = loop.time() + 5
                    while sum(len(h.requests) for h in holes) < 4 and loop.time() < end:
                        await asyncio.sleep(0.02)
                    assert sum(h.open_connections for h in holes) == 4  # four slots held by silence
                    asked = time.time()
                    await imagine(2, 0, "C picture")
                    end = loop.time() + 4 * slot_time
                    while not any(
                        "C picture" in (r.json or {}).get("contents", [{}])[-1].get("parts", [{}])[0].get("text", "")
                        for r in good.requests
                        if r.json
                    ):
                        assert loop.time() < end, "server C's job never started"
                        await asyncio.sleep(0.02)
                    started = next(r.at for r in good.requests if r.json and "C picture" in str(r.json))
                    wait = started - asked
                    print(f"server C waited {wait:.2f} s for a slot; one slot time is {slot_time:.1f} s")
                    assert wait <= slot_time + 0.5, wait
                    # Delivered, and the hung connections are all closed by the deadline.
                    await dd.wait_for(
                        "POST",
                        rf"^/channels/{servers[2][1]['id']}/messages$",
                        predicate=lambda c: bool(c.files) and c.status < 300,
                        timeout=10,
                    )
                    await asyncio.sleep(max(0.0, asked + slot_time + 0.5 - time.time()))
                    # (The doubles' handler threads notice a closed socket within 0.1 s; the
                    # margin is for a machine under load.)
                    end = loop.time() + 3
                    while sum(h.open_connections for h in holes) and loop.time() < end:
                        await asyncio.sleep(0.05)
                    assert [h.open_connections for h in holes] == [0] * 10, (
                        [h.open_connections for h in holes],
                        [len(h.requests) for h in holes],
                    )
                    # Each hung job tried at most two of its server's relays, and A/B's later
                    # jobs were refused by the breaker rather than taking slots.
                    assert sum(len(h.requests) for h in holes) <= 4 * 2
                    # The third members of A and B were told why, without waiting a deadline.
                    resting = [
                        c for c in dd.find("PATCH", r"/messages/@original$", since=0) if "stopped answering" in json.dumps(c.json or {})
                    ]
                    assert len(resting) == 2, len(resting)
                    totals = await svc.quota.totals()
                    assert totals["reserved"] == 0 and totals["committed"] == 1  # only C's picture is charged
    finally:
        for hole in holes:
            hole.close()
