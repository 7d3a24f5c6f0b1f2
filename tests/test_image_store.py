"""The image store on each database (SQLite, PostgreSQL) and each place for the bytes: files
under NB_DATA_DIR/images and an S3 bucket (moto's server, signatures checked: tests/s3.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from pathlib import Path

import pytest

from bot import store
from bot.i18n import t
from bot.image_store import ImagePruned, ImageStore, LocalBlobs
from bot.image_store_s3 import S3Blobs
from tests import pg, s3
from tests.conftest import make_image

# The fixtures that run each database test on SQLite and on a throw-away PostgreSQL server.
backend, db_target, pg_server = pg.backend, pg.db_target, pg.pg_server
s3_server = s3.s3_server

DAY = 86400.0


class Stored:
    """What is in the store, looked at from outside it: the files, or the bucket's objects."""

    def __init__(self, images: ImageStore, server: s3.S3Server | None = None, bucket: str = "") -> None:
        self.images, self.server, self.bucket = images, server, bucket

    def _key(self, sha: str) -> str:
        assert isinstance(self.images.blobs, S3Blobs)
        return self.images.blobs.key_for(sha)

    def names(self) -> list[str]:
        """The hashes stored (each once, under its own name: a stray temp file shows as itself)."""
        if self.server is None:
            root = self.images.root
            return sorted(
                p.name if p.parent.parent == root and p.parent.name == p.name[:2] else str(p) for p in root.rglob("*") if p.is_file()
            )
        return sorted(k.rpartition("/")[2] if k == self._key(k.rpartition("/")[2]) else k for k in self.server.keys(self.bucket))

    def read(self, sha: str) -> bytes | None:
        if self.server is None:
            path = self.images.path_for(sha)
            return path.read_bytes() if path.exists() else None
        try:
            return bytes(self.server.client().get_object(Bucket=self.bucket, Key=self._key(sha))["Body"].read())
        except self.server.client().exceptions.NoSuchKey:
            return None

    def replace(self, sha: str, data: bytes) -> None:
        """Damage the stored copy behind the store's back."""
        if self.server is None:
            self.images.path_for(sha).write_bytes(data)
        else:
            self.server.client().put_object(Bucket=self.bucket, Key=self._key(sha), Body=data)


@pytest.fixture(params=("local", "s3"))
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def stored(db_target: str | Path, data_dir: Path, where: str, request: pytest.FixtureRequest):
    db = await store.connect(db_target)
    try:
        if where == "local":
            images = ImageStore(db, data_dir / "images")
            yield Stored(images)
        else:
            server: s3.S3Server = request.getfixturevalue("s3_server")
            bucket = server.bucket()
            images = ImageStore(db, S3Blobs(server.config(bucket)))
            yield Stored(images, server, bucket)
        await images.aclose()
    finally:
        await db.close()


@pytest.fixture
def images(stored: Stored) -> ImageStore:
    return stored.images


async def row(images: ImageStore, sha: str):
    async with images.db.execute(
        "SELECT mime_type, byte_size, width, height, last_used, pruned FROM images WHERE sha256 = ?", (sha,)
    ) as cur:
        return await cur.fetchone()


async def age(images: ImageStore, sha: str, days: float) -> None:
    await images.db.execute("UPDATE images SET last_used = ? WHERE sha256 = ?", (time.time() - days * DAY, sha))


async def test_put_stores_once_under_its_hash_with_metadata(images: ImageStore, stored: Stored) -> None:
    png = make_image(80, 50)
    sha = await images.put(png, "image/png")
    assert sha == hashlib.sha256(png).hexdigest()
    if isinstance(images.blobs, LocalBlobs):
        assert images.path_for(sha) == images.root / sha[:2] / sha
    else:
        assert images.blobs.key_for(sha) == f"pics/{sha[:2]}/{sha}"  # the local layout, under the prefix
    assert stored.read(sha) == png

    await age(images, sha, 10)
    assert await images.put(png, "image/png") == sha
    assert stored.names() == [sha]
    async with images.db.execute("SELECT COUNT(*) FROM images") as cur:
        assert (await cur.fetchone())[0] == 1
    mime, size, width, height, last_used, pruned = await row(images, sha)
    assert (mime, size, width, height, pruned) == ("image/png", len(png), 80, 50, 0)
    assert last_used > time.time() - DAY  # storing it again counts as a use

    assert await images.get(sha) == (png, "image/png")


async def test_unknown_hash_is_a_key_error(images: ImageStore) -> None:
    with pytest.raises(KeyError):
        await images.get("0" * 64)


async def test_concurrent_puts_of_one_image_leave_one_complete_file(images: ImageStore, stored: Stored) -> None:
    jpeg = make_image(300, 200, "JPEG")
    shas = await asyncio.gather(*(images.put(jpeg, "image/jpeg") for _ in range(6)))
    assert len(set(shas)) == 1
    assert stored.names() == [shas[0]]
    assert stored.read(shas[0]) == jpeg


async def test_a_write_that_fails_leaves_nothing_behind(images: ImageStore, stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
    png = make_image(64, 64)
    if isinstance(images.blobs, LocalBlobs):

        def disk_gone(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", disk_gone)  # dies before the rename
    else:
        # The bucket out of reach: the same settings with a closed port on this machine.
        config = dataclasses.replace(images.blobs.config, endpoint=f"http://127.0.0.1:{s3._free_port()}")
        monkeypatch.setattr(images, "blobs", S3Blobs(config))
    with pytest.raises(OSError):
        await images.put(png, "image/png")
    sha = hashlib.sha256(png).hexdigest()
    assert stored.names() == []  # neither the final name nor a stray temp file
    assert await row(images, sha) is None
    with pytest.raises(KeyError):
        await images.get(sha)

    await images.blobs.aclose()
    monkeypatch.undo()
    assert await images.put(png, "image/png") == sha
    assert await images.get(sha) == (png, "image/png")


async def test_a_damaged_file_reads_as_expired_and_a_new_put_repairs_it(images: ImageStore, stored: Stored) -> None:
    png = make_image(64, 64)
    sha = await images.put(png, "image/png")
    stored.replace(sha, png[: len(png) // 2])
    with pytest.raises(ImagePruned):
        await images.get(sha)
    assert await images.put(png, "image/png") == sha
    assert await images.get(sha) == (png, "image/png")


async def test_prune_deletes_only_images_unused_for_the_retention_period(images: ImageStore, stored: Stored) -> None:
    old = make_image(40, 40)
    fresh = make_image(48, 40)  # a different size: different bytes
    old_sha = await images.put(old, "image/png")
    fresh_sha = await images.put(fresh, "image/png")
    await age(images, old_sha, 31)
    await age(images, fresh_sha, 29)

    assert await images.prune(30) == 1
    assert stored.names() == [fresh_sha]
    assert (await row(images, old_sha))[5] == 1  # the row stays, marked pruned
    with pytest.raises(ImagePruned) as info:
        await images.get(old_sha)
    assert info.value.sha256 == old_sha
    assert await images.get(fresh_sha) == (fresh, "image/png")
    assert await images.prune(30) == 0  # already pruned ones are not counted again

    # The same picture arriving again brings it back.
    assert await images.put(old, "image/png") == old_sha
    assert await images.get(old_sha) == (old, "image/png")


async def test_reading_an_image_restarts_its_retention(images: ImageStore, stored: Stored) -> None:
    png = make_image(32, 32)
    sha = await images.put(png, "image/png")
    await age(images, sha, 40)
    await images.get(sha)
    assert await images.prune(30) == 0
    # ...and `now` lets a caller (or test) ask "what if it were 31 days later?"
    assert await images.prune(30, now=time.time() + 31 * DAY) == 1
    assert stored.names() == []


def test_the_expired_message_is_translated() -> None:
    en = t(ImagePruned.key, "en")
    zh = t(ImagePruned.key, "zh-CN")
    assert en != ImagePruned.key and zh != ImagePruned.key and en != zh


async def test_inputs_of_jobs_that_never_ran_go_after_a_day_not_thirty(images: ImageStore, stored: Stored, data_dir: Path) -> None:
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
        assert stored.read(sha) is not None
    assert stored.read(refused) is None
    # Within the day, nothing goes.
    assert await images.prune_orphans(1.0, now=time.time()) == 0


async def test_strays_go_after_a_day_and_what_the_index_keeps_stays(images: ImageStore, stored: Stored) -> None:
    kept = await images.put(make_image(30, 30), "image/png")
    await age(images, kept, 400)  # old, but its row keeps it (prune() decides about it, not this)
    unindexed = make_image(31, 30)  # a put whose row was never written
    unindexed_sha = hashlib.sha256(unindexed).hexdigest()
    await images.blobs.write(unindexed_sha, unindexed, "image/png")
    failed = await images.put(make_image(32, 30), "image/png")  # pruned, but its deletion failed
    await images.db.execute("UPDATE images SET pruned = 1 WHERE sha256 = ?", (failed,))
    assert sorted(stored.names()) == sorted([kept, unindexed_sha, failed])

    assert await images.prune_strays(1.0) == 0  # all modified just now: a put may be under way
    assert await images.prune_strays(1.0, now=time.time() + 2 * DAY) == 2
    assert stored.names() == [kept]
    assert await images.get(kept) == (make_image(30, 30), "image/png")


async def test_a_put_that_loses_the_race_to_a_prune_writes_the_picture_again(images: ImageStore, stored: Stored) -> None:
    png = make_image(33, 30)
    sha = await images.put(png, "image/png")
    await age(images, sha, 40)
    real_has = images.blobs.has

    async def pruned_meanwhile(sha256: str, size: int) -> bool:
        # Another process prunes it between this put's look at the row and its bump.
        found = await real_has(sha256, size)
        await images.db.execute("UPDATE images SET pruned = 1 WHERE sha256 = ?", (sha256,))
        await images.blobs.delete([sha256])
        return found

    images.blobs.has = pruned_meanwhile  # type: ignore[method-assign]
    try:
        assert await images.put(png, "image/png") == sha
    finally:
        images.blobs.has = real_has  # type: ignore[method-assign]
    assert stored.read(sha) == png
    assert await images.get(sha) == (png, "image/png")
