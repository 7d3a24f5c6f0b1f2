"""A real S3 for the tests: moto's server in its own process on 127.0.0.1, checking signatures.

:func:`s3_server` (session-scoped) starts ``python -m moto.server`` on a free loopback port with
``INITIAL_NO_AUTH_ACTION_COUNT=3``: the first three requests (an IAM user, its access key, its
policy, made here with boto3) pass unsigned, and every request after them must carry a valid
SigV4 signature of that key, so a wrong signature from the bot's signer fails the tests.
moto is a dev-only dependency (pyproject's dev extra); it runs offline.

Each test asks :meth:`S3Server.bucket` for a fresh bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bot.image_store_s3 import S3Config

_counter = itertools.count(1)
REGION = "eu-west-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def env(self, bucket: str, prefix: str = "pics") -> dict[str, str]:
        """The settings an operator would write for this server."""
        return {
            "NB_IMAGE_STORE": f"s3://{bucket}/{prefix}",
            "NB_S3_ENDPOINT": self.endpoint,
            "NB_S3_REGION": REGION,
            "NB_S3_ACCESS_KEY_ID": self.access_key_id,
            "NB_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def config(self, bucket: str, prefix: str = "pics", **changes: object) -> S3Config:
        from bot.image_store_s3 import parse_config

        env = self.env(bucket, prefix)
        config = parse_config(env["NB_IMAGE_STORE"], env)
        import dataclasses

        return dataclasses.replace(config, **changes)  # type: ignore[arg-type]

    def client(self):  # boto3, for looking into the bucket from outside the bot
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def bucket(self) -> str:
        name = f"nb-test-{os.getpid()}-{next(_counter)}"
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        import boto3
        import moto  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] is not installed (the dev extra): the S3 image store cases did not run")
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("moto's S3 server did not start: the S3 image store cases did not run")
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="bot")
        key = iam.create_access_key(UserName="bot")["AccessKey"]
        iam.put_user_policy(
            UserName="bot",
            PolicyName="all-s3",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
        )
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
