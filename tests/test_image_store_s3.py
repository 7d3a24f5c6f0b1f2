"""The S3 image store's own parts: the SigV4 signer against botocore's (the reference), the
settings, bounded reads, timeouts, and operator messages that never hold the secret. The store's
behaviour (put/get/prune) runs in tests/test_image_store.py on local files and on moto's S3."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import store
from bot.image_store import ImagePruned, ImageStore
from bot.image_store_s3 import UNSIGNED_PAYLOAD, S3Blobs, S3Unavailable, encode_query, parse_config, sign
from bot.settings import SettingsError, load_settings
from tests import s3
from tests.conftest import make_image

s3_server = s3.s3_server

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = dt.datetime(2026, 12, 2, 7, 30, 15, tzinfo=dt.UTC)


def botocore_authorization(method: str, url: str, headers: dict[str, str], body: bytes, *, unsigned: bool, token: str | None) -> str:
    """botocore's S3SigV4Auth on the same request at the same time: the reference."""
    from unittest import mock

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    if unsigned:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    auth = S3SigV4Auth(Credentials("AKIDEXAMPLE", SECRET, token), "s3", "eu-central-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)):
        auth.add_auth(request)
    return str(request.headers["Authorization"])


CASES = [
    # (method, url, headers, body, unsigned, session token)
    ("PUT", "https://s3.eu-central-1.amazonaws.com/bucket/pics/ab/ab12", {"Content-Type": "image/png"}, b"\x89PNG picture", False, None),
    ("GET", "https://bucket.s3.eu-central-1.amazonaws.com/pics/ab/ab12", {}, b"", False, None),
    ("HEAD", "http://127.0.0.1:9000/bucket/pics/ab/ab12", {}, b"", False, "a-session/token+="),
    ("DELETE", "https://acct.r2.cloudflarestorage.com:8443/b/p/x", {}, b"", False, None),
    ("PUT", "https://s3.eu-central-1.amazonaws.com/b/k", {"Content-Type": "image/jpeg"}, b"jpeg bytes", True, None),
]


@pytest.mark.parametrize(("method", "url", "headers", "body", "unsigned", "token"), CASES)
def test_the_signature_is_botocores(method: str, url: str, headers: dict[str, str], body: bytes, unsigned: bool, token: str | None) -> None:
    payload = UNSIGNED_PAYLOAD if unsigned else hashlib.sha256(body).hexdigest()
    ours = sign(
        method,
        url,
        headers,
        payload_sha256=payload,
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,
        region="eu-central-1",
        when=WHEN,
        session_token=token,
    )
    assert ours["authorization"] == botocore_authorization(
        method, url, headers, body, unsigned=unsigned and url.startswith("https"), token=token
    )


def test_a_listing_query_is_signed_as_botocore_signs_it() -> None:
    # Continuation tokens hold '/', '+' and '='; encode_query is what is sent and what is signed.
    query = encode_query({"list-type": "2", "prefix": "pics/", "continuation-token": "1ab/c+d=="})
    url = f"https://s3.eu-central-1.amazonaws.com/bucket?{query}"
    ours = sign(
        "GET", url, {}, payload_sha256=hashlib.sha256(b"").hexdigest(), access_key_id="AKIDEXAMPLE", secret_access_key=SECRET,
        region="eu-central-1", when=WHEN,
    )  # fmt: skip
    assert ours["authorization"] == botocore_authorization("GET", url, {}, b"", unsigned=False, token=None)
    assert "continuation-token=1ab%2Fc%2Bd%3D%3D" in query


def env(**extra: str) -> dict[str, str]:
    return {"NB_ENV_FILE": "/dev/null", "DISCORD_TOKEN": "t", **extra}


def test_settings_for_aws_r2_and_a_self_hosted_server() -> None:
    aws = load_settings(
        env(NB_IMAGE_STORE="s3://my-pics/bot", AWS_ACCESS_KEY_ID="AKIA1", AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="eu-west-3")
    )
    c = aws.image_store
    assert c is not None
    assert (c.bucket, c.prefix, c.region, c.endpoint, c.path_style) == (
        "my-pics",
        "bot",
        "eu-west-3",
        "https://s3.eu-west-3.amazonaws.com",
        False,
    )
    assert S3Blobs(c)._url("bot/ab/abc") == "https://my-pics.s3.eu-west-3.amazonaws.com/bot/ab/abc"

    r2 = load_settings(
        env(
            NB_IMAGE_STORE="s3://pics",
            NB_S3_ENDPOINT="https://acct.r2.cloudflarestorage.com",
            NB_S3_REGION="auto",
            NB_S3_ACCESS_KEY_ID="k",
            NB_S3_SECRET_ACCESS_KEY=SECRET,
            NB_S3_PATH_STYLE="0",
        )
    ).image_store
    assert r2 is not None and S3Blobs(r2)._url("ab/abc") == "https://pics.acct.r2.cloudflarestorage.com/ab/abc"

    garage = load_settings(
        env(
            NB_IMAGE_STORE="s3://Pics.Bucket/a/b/",
            NB_S3_ENDPOINT="http://10.0.0.5:3900",
            NB_S3_ACCESS_KEY_ID="k",
            NB_S3_SECRET_ACCESS_KEY=SECRET,
        )
    ).image_store
    assert garage is not None and garage.path_style  # an endpoint of one's own: path-style unless told otherwise
    assert S3Blobs(garage)._url("a/b/ab/abc") == "http://10.0.0.5:3900/Pics.Bucket/a/b/ab/abc"
    assert SECRET not in repr(aws) and SECRET not in repr(garage)
    assert load_settings(env()).image_store is None and load_settings(env(NB_IMAGE_STORE="local")).image_store is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"NB_IMAGE_STORE": "s3://bucket"}, "needs NB_S3_ACCESS_KEY_ID"),
        ({"NB_IMAGE_STORE": "gs://bucket"}, "must be s3://bucket/prefix"),
        ({"NB_IMAGE_STORE": "s3://x"}, "is not a bucket name"),
        ({"NB_IMAGE_STORE": "s3://bucket/a b"}, "the prefix"),
        ({"NB_IMAGE_STORE": "s3://Upper.Case"}, "NB_S3_PATH_STYLE=1"),
        ({"NB_IMAGE_STORE": "s3://bucket", "NB_S3_ENDPOINT": "ftp://host"}, "NB_S3_ENDPOINT must be"),
        ({"NB_IMAGE_STORE": "s3://bucket", "NB_S3_ENDPOINT": f"https://k:{SECRET}@host"}, "NB_S3_ENDPOINT must be"),
        ({"NB_IMAGE_STORE": "s3://bucket", "NB_S3_TIMEOUT": "soon"}, "NB_S3_TIMEOUT"),
        ({"NB_IMAGE_STORE": "s3://bucket", "NB_S3_REGION": "eu west"}, "NB_S3_REGION"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_without_the_secret(extra: dict[str, str], says: str) -> None:
    keys = {} if "needs" in says else {"NB_S3_ACCESS_KEY_ID": "k", "NB_S3_SECRET_ACCESS_KEY": SECRET}
    with pytest.raises(SettingsError) as err:
        load_settings(env(**keys, **extra))
    assert says in str(err.value) and SECRET not in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
async def db(data_dir: Path):
    conn = await store.connect(data_dir / "bot.sqlite3")
    yield conn
    await conn.close()


async def test_wrong_keys_and_an_unreachable_bucket_are_clear_log_lines_without_the_secret(
    s3_server: s3.S3Server, db: store.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.services import Services

    bucket = s3_server.bucket()
    secret = "wrong-secret-that-must-never-show"
    cases = [
        (dataclasses.replace(s3_server.config(bucket), secret_access_key=secret), "SignatureDoesNotMatch"),
        (dataclasses.replace(s3_server.config(bucket), access_key_id="AKIDUNKNOWN", secret_access_key=secret), "InvalidAccessKeyId"),
        (dataclasses.replace(s3_server.config("no-such-bucket-here"), secret_access_key=s3_server.secret_access_key), "NoSuchBucket"),
        (
            dataclasses.replace(s3_server.config(bucket), endpoint=f"http://127.0.0.1:{s3._free_port()}", secret_access_key=secret),
            "cannot reach",
        ),
    ]
    caplog.set_level(logging.DEBUG)
    for config, says in cases:
        images = ImageStore(db, S3Blobs(config))
        with pytest.raises(OSError) as err:
            await images.put(make_image(20, 20), "image/png")
        assert says in str(err.value), str(err.value)
        assert f"s3://{config.bucket}/pics/" in str(err.value)  # names the object
        # What the bot logs at start (Services._check_image_store) for the same settings.
        svc = object.__new__(Services)
        svc.images = images
        await svc._check_image_store()
        await images.aclose()
    logged = caplog.text
    assert "SignatureDoesNotMatch" in logged and "check NB_S3_SECRET_ACCESS_KEY" in logged and "InvalidAccessKeyId" in logged
    assert secret not in logged and s3_server.secret_access_key not in logged
    assert "Signature=" not in logged and "AWS4-HMAC" not in logged  # no signature or header either


class SlowServer:
    """A TCP server that accepts, reads the request and then answers nothing (or a huge body)."""

    def __init__(self, answer: bytes = b"", drip: float = 0.0) -> None:
        self.drip = drip  # seconds between single bytes of the body (0: as fast as it goes)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.sent = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.recv(65536)
            if self.answer:
                try:
                    conn.sendall(self.answer)
                    while not self._stop.is_set():  # keep streaming: the client must stop reading
                        piece = b"x" if self.drip else b"x" * 65536
                        conn.sendall(piece)
                        self.sent += len(piece)
                        if self.drip:
                            self._stop.wait(self.drip)
                except OSError:
                    pass
            self._stop.wait(10)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    server = SlowServer()
    yield server
    server.close()


async def test_a_bucket_that_never_answers_fails_within_the_timeout(slow: SlowServer) -> None:
    config = parse_config(
        "s3://bucket",
        {
            "NB_S3_ENDPOINT": f"http://127.0.0.1:{slow.port}",
            "NB_S3_ACCESS_KEY_ID": "k",
            "NB_S3_SECRET_ACCESS_KEY": SECRET,
            "NB_S3_TIMEOUT": "0.5",
        },
    )
    blobs = S3Blobs(config)
    started = asyncio.get_running_loop().time()
    with pytest.raises(S3Unavailable, match=r"no answer within 0.5 s \(NB_S3_TIMEOUT\)"):
        await blobs.read("ab" * 32, 100)
    assert asyncio.get_running_loop().time() - started < 3
    await blobs.aclose()


async def test_reads_stop_at_the_size_the_index_recorded() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n"  # no length: a body without end
    server = SlowServer(head)
    try:
        config = parse_config(
            "s3://bucket",
            {"NB_S3_ENDPOINT": f"http://127.0.0.1:{server.port}", "NB_S3_ACCESS_KEY_ID": "k", "NB_S3_SECRET_ACCESS_KEY": SECRET},
        )
        blobs = S3Blobs(config)
        # Not the picture the index recorded (longer): damaged, so "expired", not an error.
        assert await blobs.read("ab" * 32, 1000) is None
        with pytest.raises(S3Unavailable, match="larger than the 1000 bytes expected"):
            await blobs._send("GET", "GET", "ab/" + "ab" * 32, cap=1000)
        assert server.sent < 8 << 20  # it stopped reading, long before the endless body ran out
        await blobs.aclose()
    finally:
        server.close()


async def test_a_bucket_that_trickles_bytes_cannot_hold_a_read_past_its_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n"
    server = SlowServer(head, drip=0.1)  # a byte every 0.1 s: no single wait reaches the timeout
    try:
        config = parse_config(
            "s3://bucket",
            {
                "NB_S3_ENDPOINT": f"http://127.0.0.1:{server.port}",
                "NB_S3_ACCESS_KEY_ID": "k",
                "NB_S3_SECRET_ACCESS_KEY": SECRET,
                "NB_S3_TIMEOUT": "0.5",
            },
        )
        blobs = S3Blobs(config)
        started = asyncio.get_running_loop().time()
        with pytest.raises(S3Unavailable, match=r"not done within 1.5 s \(twice NB_S3_TIMEOUT \+ 1 s per MB\)"):
            await blobs.read("ab" * 32, 500_000)  # deadline: 2 × 0.5 s + 0.5 s for half a MB
        assert asyncio.get_running_loop().time() - started < 3
        await blobs.aclose()
    finally:
        server.close()


async def test_an_object_replaced_by_other_bytes_reads_as_expired(s3_server: s3.S3Server, db: store.Connection) -> None:
    bucket = s3_server.bucket()
    images = ImageStore(db, S3Blobs(s3_server.config(bucket)))
    png = make_image(40, 40)
    sha = await images.put(png, "image/png")
    other = make_image(40, 41)
    s3_server.client().put_object(Bucket=bucket, Key=f"pics/{sha[:2]}/{sha}", Body=other[: len(png)])
    with pytest.raises(ImagePruned):
        await images.get(sha)
    assert await images.put(png, "image/png") == sha  # and a new put restores it
    assert await images.get(sha) == (png, "image/png")
    await images.aclose()


async def test_listing_walks_every_page(s3_server: s3.S3Server, db: store.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.bucket()
    blobs = S3Blobs(s3_server.config(bucket))
    shas = []
    for i in range(7):
        data = make_image(10 + i, 10)
        shas.append(hashlib.sha256(data).hexdigest())
        await blobs.write(shas[-1], data, "image/png")
    s3_server.client().put_object(Bucket=bucket, Key="pics/not-a-picture.txt", Body=b"x")
    real = encode_query

    def small_pages(params: dict[str, str]) -> str:
        return real({**params, "max-keys": "3"})  # three pages for seven pictures

    monkeypatch.setattr("bot.image_store_s3.encode_query", small_pages)
    listed = [sha async for sha, _ in blobs.listing()]
    assert sorted(listed) == sorted(shas)
    await blobs.aclose()
