from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from bot import store
from bot.i18n import t
from bot.image_store import ImagePruned, ImageStore
from tests import pg
from tests.conftest import make_image

# The fixtures that run each database test on SQLite and on a throw-away PostgreSQL server.
backend, db_target, pg_server = pg.backend, pg.db_target, pg.pg_server

DAY = 86400.0


@pytest.fixture
async def images(db_target: str | Path, data_dir: Path):
    db = await store.connect(db_target)
    try:
        yield ImageStore(db, data_dir / "images")
    finally:
        await db.close()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def row(images: ImageStore, sha: str):
    async with images.db.execute(
        "SELECT mime_type, byte_size, width, height, last_used, pruned FROM images WHERE sha256 = ?", (sha,)
    ) as cur:
        return await cur.fetchone()


async def age(images: ImageStore, sha: str, days: float) -> None:
    await images.db.execute("UPDATE images SET last_used = ? WHERE sha256 = ?", (time.time() - days * DAY, sha))


async def test_put_stores_once_under_its_hash_with_metadata(images: ImageStore) -> None:
    png = make_image(80, 50)
    sha = await images.put(png, "image/png")
    assert sha == hashlib.sha256(png).hexdigest()
    assert images.path_for(sha) == images.root / sha[:2] / sha
    assert images.path_for(sha).read_bytes() == png

    await age(images, sha, 10)
    assert await images.put(png, "image/png") == sha
    assert stored_files(images.root) == [images.path_for(sha)]
    async with images.db.execute("SELECT COUNT(*) FROM images") as cur:
        assert (await cur.fetchone())[0] == 1
    mime, size, width, height, last_used, pruned = await row(images, sha)
    assert (mime, size, width, height, pruned) == ("image/png", len(png), 80, 50, 0)
    assert last_used > time.time() - DAY  # storing it again counts as a use

    assert await images.get(sha) == (png, "image/png")


async def test_unknown_hash_is_a_key_error(images: ImageStore) -> None:
    with pytest.raises(KeyError):
        await images.get("0" * 64)


async def test_concurrent_puts_of_one_image_leave_one_complete_file(images: ImageStore) -> None:
    jpeg = make_image(300, 200, "JPEG")
    shas = await asyncio.gather(*(images.put(jpeg, "image/jpeg") for _ in range(6)))
    assert len(set(shas)) == 1
    assert stored_files(images.root) == [images.path_for(shas[0])]
    assert images.path_for(shas[0]).read_bytes() == jpeg


async def test_a_write_that_dies_before_the_rename_leaves_nothing_behind(images: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    png = make_image(64, 64)

    def disk_gone(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_gone)
    with pytest.raises(OSError):
        await images.put(png, "image/png")
    sha = hashlib.sha256(png).hexdigest()
    assert stored_files(images.root) == []  # neither the final name nor a stray temp file
    assert await row(images, sha) is None
    with pytest.raises(KeyError):
        await images.get(sha)

    monkeypatch.undo()
    assert await images.put(png, "image/png") == sha
    assert await images.get(sha) == (png, "image/png")


async def test_a_damaged_file_reads_as_expired_and_a_new_put_repairs_it(images: ImageStore) -> None:
    png = make_image(64, 64)
    sha = await images.put(png, "image/png")
    images.path_for(sha).write_bytes(png[: len(png) // 2])
    with pytest.raises(ImagePruned):
        await images.get(sha)
    assert await images.put(png, "image/png") == sha
    assert await images.get(sha) == (png, "image/png")


async def test_prune_deletes_only_images_unused_for_the_retention_period(images: ImageStore) -> None:
    old = make_image(40, 40)
    fresh = make_image(48, 40)  # a different size: different bytes
    old_sha = await images.put(old, "image/png")
    fresh_sha = await images.put(fresh, "image/png")
    await age(images, old_sha, 31)
    await age(images, fresh_sha, 29)

    assert await images.prune(30) == 1
    assert not images.path_for(old_sha).exists()
    assert images.path_for(fresh_sha).exists()
    assert (await row(images, old_sha))[5] == 1  # the row stays, marked pruned
    with pytest.raises(ImagePruned) as info:
        await images.get(old_sha)
    assert info.value.sha256 == old_sha
    assert await images.get(fresh_sha) == (fresh, "image/png")
    assert await images.prune(30) == 0  # already pruned ones are not counted again

    # The same picture arriving again brings it back.
    assert await images.put(old, "image/png") == old_sha
    assert await images.get(old_sha) == (old, "image/png")


async def test_reading_an_image_restarts_its_retention(images: ImageStore) -> None:
    png = make_image(32, 32)
    sha = await images.put(png, "image/png")
    await age(images, sha, 40)
    await images.get(sha)
    assert await images.prune(30) == 0
    # ...and `now` lets a caller (or test) ask "what if it were 31 days later?"
    assert await images.prune(30, now=time.time() + 31 * DAY) == 1
    assert stored_files(images.root) == []


def test_the_expired_message_is_translated() -> None:
    en = t(ImagePruned.key, "en")
    zh = t(ImagePruned.key, "zh-CN")
    assert en != ImagePruned.key and zh != ImagePruned.key and en != zh


async def test_inputs_of_jobs_that_never_ran_go_after_a_day_not_thirty(images: ImageStore, data_dir: Path) -> None:
    from bot.conversations import Conversations
    from bot.jobs import NewJob, make_queue
    from bot.quota import Quota, QuotaRules
    from bot.settings import Settings

    db = images.db
    refused = await images.put(make_image(80, 80, color=(1, 2, 3)), "image/png")  # its job was cancelled
    waiting = await images.put(make_image(80, 80, color=(4, 5, 6)), "image/png")  # its job is still queued
    kept = await images.put(make_image(80, 80, color=(7, 8, 9)), "image/png")  # a turn's input
    result = make_image(80, 80, color=(9, 9, 9))

    async def never(job):  # the queue is not started: jobs stay queued
        raise AssertionError

    queue = make_queue(db, Quota(db), Settings(discord_token="", data_dir=data_dir, relay=None), never)
    rules = QuotaRules(user_daily=10)
    gone = await queue.submit(
        NewJob(user_id=1, guild_id=1, channel_id=1, request={"images": [refused]}, model="gemini-3.1-flash-image-preview"),
        credits=1,
        rules=rules,
    )
    await queue.submit(
        NewJob(user_id=2, guild_id=1, channel_id=1, request={"images": [waiting]}, model="gemini-3.1-flash-image-preview"),
        credits=1,
        rules=rules,
    )
    assert await queue.cancel(gone.id, by_user=1) == "cancelled"
    conversations = Conversations(db, images)
    conv = await conversations.create(1, 1, 1, "gemini-3.1-flash-image-preview")
    data, _ = await images.get(kept)
    await conversations.add_turn(
        conv,
        None,
        {
            "role": "user",
            "parts": [{"text": "go"}, {"inlineData": {"mimeType": "image/png", "data": __import__("base64").b64encode(data).decode()}}],
        },
        None,
        result,
        "image/png",
        prompt="go",
    )
    later = time.time() + 2 * 86400
    assert await images.prune_orphans(1.0, now=later) == 1
    assert (await images.info(refused)).pruned
    for sha in (waiting, kept, hashlib.sha256(result).hexdigest()):
        assert not (await images.info(sha)).pruned
        assert images.path_for(sha).exists()
    assert not images.path_for(refused).exists()
    # Within the day, nothing goes.
    assert await images.prune_orphans(1.0, now=time.time()) == 0
