"""History: a member's delivered pictures and a server's, newest first, paged, filtered by
model, each with the ids of its real result message and thread — over the real job, turn and
conversation tables in a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import store
from bot.conversations import Conversations
from bot.gallery import PAGE_SIZE, Gallery, GalleryError
from bot.i18n import t
from bot.image_store import ImageStore
from tests.conftest import make_image

GUILD, CHANNEL, MEMBER, OTHER = 100, 200, 300, 400
FLASH, PRO = "gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview"


class World:
    def __init__(self, db, conv: Conversations) -> None:
        self.db, self.conv, self.clock = db, conv, 1_000.0

    async def picture(self, user: int, prompt: str, *, model: str = FLASH, guild: int | None = GUILD, status: str = "done") -> int:
        """A job as the bot leaves it: a result turn in a conversation bound to a thread, the
        result message id recorded on the job and the turn. Returns the job id."""
        self.clock += 60
        request = {"prompt": f"model-facing {prompt}", "display_prompt": prompt, "model": model, "post_channel_id": CHANNEL}
        rows = await store.write(
            self.db,
            "INSERT INTO jobs (guild_id, channel_id, user_id, kind, status, request, model, size, finished_at, created_at)"
            " VALUES (?, ?, ?, 'imagine', ?, ?, ?, '1K', ?, ?) RETURNING id",
            (guild, CHANNEL + 1, user, status, json.dumps(request), model, self.clock, self.clock - 5),
        )
        job_id = int(rows[0][0])
        if status != "done":
            return job_id
        cid = await self.conv.create(guild, CHANNEL, user, model)
        await self.conv.bind_thread(cid, 9_000 + job_id)
        turn = await self.conv.add_turn(
            cid, None, None, None, make_image(20 + job_id, 20), "image/png", prompt=prompt, job_id=job_id, message_id=5_000 + job_id
        )
        await store.write(
            self.db, "UPDATE jobs SET result_turn_id = ?, result_message_id = ? WHERE id = ?", (turn.id, 5_000 + job_id, job_id)
        )
        return job_id


@pytest.fixture
async def world(tmp_path: Path, data_dir: Path):
    db = await store.connect(tmp_path / "bot.sqlite3")
    try:
        yield World(db, Conversations(db, ImageStore(db, data_dir / "images")))
    finally:
        await db.close()


async def test_a_members_pictures_newest_first_with_jump_links_to_the_real_result_and_thread(world: World) -> None:
    first = await world.picture(MEMBER, "a red fox")
    await world.picture(OTHER, "someone else's")
    await world.picture(MEMBER, "never delivered", status="failed")
    last = await world.picture(MEMBER, "a blue heron", model=PRO)
    page = await Gallery(world.db).page(GUILD, user_id=MEMBER)
    assert (page.page, page.pages, page.total) == (1, 1, 2)
    assert [i.job_id for i in page.items] == [last, first]
    heron = page.items[0]
    assert heron.prompt == "a blue heron"  # what the member saw, not the model-facing prompt
    assert heron.model == PRO and heron.size == "1K"
    turn = await world.conv.turn_by_message(heron.message_id)
    assert turn is not None and turn.id == heron.turn_id and turn.job_id == last
    assert heron.message_url == f"https://discord.com/channels/{GUILD}/{CHANNEL}/{5_000 + last}"
    assert heron.thread_url == f"https://discord.com/channels/{GUILD}/{9_000 + last}"


async def test_pages_hold_five_and_a_page_past_the_end_is_a_translated_refusal(world: World) -> None:
    jobs = [await world.picture(MEMBER, f"picture {n}") for n in range(PAGE_SIZE * 2 + 1)]
    gallery = Gallery(world.db)
    pages = [await gallery.page(GUILD, user_id=MEMBER, page=n) for n in (1, 2, 3)]
    assert [len(p.items) for p in pages] == [5, 5, 1]
    assert [i.job_id for p in pages for i in p.items] == jobs[::-1]
    for bad in (0, 4):
        with pytest.raises(GalleryError) as caught:
            await gallery.page(GUILD, user_id=MEMBER, page=bad)
        assert caught.value.key == "history.page_out_of_range"
        assert t(caught.value.key, "en", **caught.value.params) == f"There is no page {bad}; the history has 3 pages."
        assert "3 页" in t(caught.value.key, "zh-CN", **caught.value.params)


async def test_an_empty_history_is_page_one_of_none(world: World) -> None:
    page = await Gallery(world.db).page(GUILD, user_id=MEMBER)
    assert (page.items, page.pages, page.total) == ([], 0, 0)


async def test_the_model_filter_and_the_models_menu(world: World) -> None:
    await world.picture(MEMBER, "flash one")
    pro = await world.picture(MEMBER, "pro one", model=PRO)
    gallery = Gallery(world.db)
    assert await gallery.models(GUILD, user_id=MEMBER) == sorted([FLASH, PRO])
    only = await gallery.page(GUILD, user_id=MEMBER, model=PRO)
    assert [i.job_id for i in only.items] == [pro]


async def test_an_admins_view_is_the_whole_server_and_only_that_server(world: World) -> None:
    mine = await world.picture(MEMBER, "mine")
    theirs = await world.picture(OTHER, "theirs")
    await world.picture(MEMBER, "elsewhere", guild=GUILD + 1)
    dm = await world.picture(MEMBER, "in a DM", guild=None)
    server = await Gallery(world.db).page(GUILD, user_id=None)
    assert [i.job_id for i in server.items] == [theirs, mine]
    direct = await Gallery(world.db).page(None, user_id=MEMBER)
    assert [i.job_id for i in direct.items] == [dm]
    assert direct.items[0].message_url == f"https://discord.com/channels/@me/{CHANNEL}/{5_000 + dm}"


async def test_reopen_finds_ones_own_picture_and_refuses_someone_elses(world: World) -> None:
    mine = await world.picture(MEMBER, "mine")
    theirs = await world.picture(OTHER, "theirs")
    gallery = Gallery(world.db)
    assert (await gallery.item(GUILD, mine, user_id=MEMBER)).prompt == "mine"
    with pytest.raises(GalleryError) as caught:
        await gallery.item(GUILD, theirs, user_id=MEMBER)
    assert caught.value.key == "history.gone"
    assert (await gallery.item(GUILD, theirs, user_id=None)).user_id == OTHER  # an admin may


async def test_a_long_prompt_is_shown_as_a_preview(world: World) -> None:
    await world.picture(MEMBER, "word " * 100)
    item = (await Gallery(world.db).page(GUILD, user_id=MEMBER)).items[0]
    assert len(item.prompt) == 200 and item.prompt.endswith("…")
