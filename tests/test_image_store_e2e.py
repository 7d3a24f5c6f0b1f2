"""The real bot with NB_IMAGE_STORE=s3://…: a picture it delivers lands in the bucket (moto's S3
server, signatures checked: tests/s3.py), and an edit in its thread reads it back from there."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from bot.image_store_s3 import S3Blobs
from tests import s3
from tests.test_bot_e2e import say_in_thread, start_picture, world

s3_server = s3.s3_server


async def test_a_delivered_picture_lands_in_the_bucket_and_a_thread_edit_reads_it_back(tmp_path: Path, s3_server: s3.S3Server) -> None:
    bucket = s3_server.bucket()
    async with world(tmp_path, **s3_server.env(bucket, "nb/images")) as (w, bot):
        assert isinstance(bot.services.images.blobs, S3Blobs)
        root, thread_id = await start_picture(w, "sig-root")
        keys = s3_server.keys(bucket)
        assert len(keys) == 1 and keys[0].startswith("nb/images/")
        sha = keys[0].rpartition("/")[2]
        in_bucket = bytes(s3_server.client().get_object(Bucket=bucket, Key=keys[0])["Body"].read())
        assert hashlib.sha256(in_bucket).hexdigest() == sha
        assert not (w.data_dir / "images").exists() or not any((w.data_dir / "images").rglob("*?/*"))  # nothing on this disk

        await say_in_thread(w, bot, thread_id, "make it night time", "sig-second")
        sent = w.relay.requests[-1].json["contents"]
        earlier = [p["inlineData"]["data"] for c in sent if c["role"] == "model" for p in c["parts"] if "inlineData" in p]
        assert [base64.b64decode(d) for d in earlier] == [in_bucket]  # the first picture, read from the bucket
        # The relay double answers the same bytes again: stored once, under the same name.
        assert s3_server.keys(bucket) == keys
        assert await bot.services.images.get(sha) == (in_bucket, "image/png")
