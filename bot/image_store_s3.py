"""Pictures in an S3-compatible bucket (``NB_IMAGE_STORE=s3://bucket/prefix``): the blob side of
:class:`bot.image_store.ImageStore`, which keeps the index, the retention rule and pruning.

Objects are named ``<prefix>/<sha[:2]>/<sha>``, the local store's layout, so
``aws s3 sync NB_DATA_DIR/images s3://bucket/prefix`` moves an existing store as it is (the
``images`` table stays valid). Works with AWS S3, Cloudflare R2, Backblaze B2 and self-hosted
Garage / SeaweedFS / Ceph RGW (path-style addressing, ``NB_S3_PATH_STYLE``).

Why a small SigV4 signer over httpx instead of boto3: the bot's HTTP client is httpx (async);
botocore is synchronous (every call would go to a thread) and large, and the bot needs five
calls (PUT, GET, HEAD, DELETE, ListObjectsV2). :func:`sign` is checked against botocore's own
``S3SigV4Auth`` (same request, same time, same Authorization header) and end to end against
moto's S3 server (tests/test_image_store_s3.py).

- A PUT is signed with the SHA-256 of its body, which is the object's name: the server refuses
  bytes damaged on the way. Reads are capped at the size the index recorded and re-hashed.
- Every request has a timeout: ``NB_S3_TIMEOUT`` for each step, and for the whole request twice
  that plus a second per MB of picture, so a server trickling bytes cannot hold it. A failure is
  :class:`S3Unavailable`, an ``OSError`` (callers treat it like a full disk), whose text names the
  operation, the object and S3's error code with a hint, never a key or a signature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

log = logging.getLogger(__name__)

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# A ListObjectsV2 page is at most 1,000 keys (~300 KB of XML); anything far larger is not S3.
MAX_LISTING_BYTES = 8 << 20
# DELETEs in flight at once while pruning (one request per object: DeleteObjects needs a
# Content-MD5 that some S3-compatible servers check differently).
DELETE_CONCURRENCY = 8

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")  # usable as a host name label
_PREFIX = re.compile(r"^[A-Za-z0-9._/-]*$")
_REGION = re.compile(r"^[A-Za-z0-9-]{1,40}$")
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

# What an operator should look at for S3's common refusals.
_HINTS = {
    "InvalidAccessKeyId": "check NB_S3_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "check NB_S3_SECRET_ACCESS_KEY (and NB_S3_REGION)",
    "AuthorizationHeaderMalformed": "check NB_S3_REGION",
    "AccessDenied": "the key may not read/write this bucket and prefix",
    "NoSuchBucket": "check the bucket name in NB_IMAGE_STORE",
    "PermanentRedirect": "the bucket is in another region or needs NB_S3_PATH_STYLE=0",
    "RequestTimeTooSkewed": "this machine's clock is off",
}


class S3Unavailable(OSError):
    """The bucket refused or could not be reached; ``str()`` is one operator line, no secrets."""


class S3TooLarge(S3Unavailable):
    """An answer longer than expected (an object that is not the picture it is named after)."""


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str  # "" or "some/prefix" (no leading or trailing slash)
    endpoint: str  # scheme://host[:port], no path
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = False
    timeout: float = 30.0

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def _env(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def parse_config(url: str, env: Mapping[str, str]) -> S3Config:
    """``s3://bucket/prefix`` and the ``NB_S3_*`` / ``AWS_*`` variables; ValueError names the
    variable at fault (and never echoes a credential)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("NB_IMAGE_STORE must be s3://bucket/prefix (or unset for NB_DATA_DIR/images)")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"NB_IMAGE_STORE: {bucket!r} is not a bucket name (3-63 letters, digits, dots, hyphens)")
    if not _PREFIX.match(prefix) or "//" in prefix:
        raise ValueError(f"NB_IMAGE_STORE: the prefix {prefix!r} may hold only letters, digits, '.', '_', '-' and single '/'")
    region = _env(env, "NB_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
    if not _REGION.match(region):
        raise ValueError(f"NB_S3_REGION={region!r} is not a region name (e.g. us-east-1; auto for Cloudflare R2)")
    raw_endpoint = _env(env, "NB_S3_ENDPOINT")
    endpoint = (raw_endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
    ep = urlsplit(endpoint)
    if ep.scheme not in ("http", "https") or not ep.hostname or ep.path or ep.query or "@" in ep.netloc:
        raise ValueError(
            "NB_S3_ENDPOINT must be a scheme://host[:port] URL without a path, e.g. https://<account>.r2.cloudflarestorage.com"
        )
    key_id = _env(env, "NB_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    secret = _env(env, "NB_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise ValueError(
            "NB_IMAGE_STORE=s3://… needs NB_S3_ACCESS_KEY_ID and NB_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    style = _env(env, "NB_S3_PATH_STYLE").lower()
    if style and style not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"NB_S3_PATH_STYLE={style!r} is not a yes/no value; use 1 or 0")
    # Self-hosted servers (Garage, SeaweedFS) want path-style; AWS wants virtual-hosted. R2 and
    # B2 take either. So: path-style with an endpoint of one's own, unless told otherwise.
    path_style = style in ("1", "true", "yes", "on") if style else bool(raw_endpoint)
    if not path_style and not _DNS_BUCKET.match(bucket):
        raise ValueError(f"NB_IMAGE_STORE: bucket {bucket!r} cannot be a host name; set NB_S3_PATH_STYLE=1")
    timeout_raw = _env(env, "NB_S3_TIMEOUT")
    try:
        timeout = float(timeout_raw) if timeout_raw else 30.0
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 3600:
        raise ValueError(f"NB_S3_TIMEOUT={timeout_raw!r} must be a number of seconds between 0 and 3600")
    return S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=region,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=_env(env, "NB_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN") or None,
        path_style=path_style,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------- signing


def _host(url: str) -> str:
    """The Host header as signed: the URL's host, with the port only when it is not the default."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    default = {"http": ":80", "https": ":443"}.get(parts.scheme)
    return host[: -len(default)] if default and host.endswith(default) else host


def encode_query(params: Mapping[str, str]) -> str:
    """The canonical query string (also sent as is): encoded, then sorted (SigV4's rule)."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    payload_sha256: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    when: dt.datetime,
    session_token: str | None = None,
    service: str = "s3",
) -> dict[str, str]:
    """AWS Signature Version 4 for one request: ``headers`` plus host, x-amz-date,
    x-amz-content-sha256 (``payload_sha256``: the body's hex SHA-256, or UNSIGNED-PAYLOAD),
    the session token if any, and Authorization. Every header given is signed. ``url``'s path
    and query must already be encoded as sent (S3 signs the path as is, not normalised)."""
    parts = urlsplit(url)
    stamp = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    out = {k.lower(): v for k, v in headers.items()}
    out["host"] = _host(url)
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = payload_sha256
    if session_token:
        out["x-amz-security-token"] = session_token
    names = sorted(out)
    canonical_headers = "".join(f"{k}:{' '.join(out[k].split())}\n" for k in names)
    signed = ";".join(names)
    # Sorted by (name, value), as botocore does; the URL's query is already encoded (encode_query).
    pairs = sorted(tuple(p.partition("=")[::2]) for p in parts.query.split("&")) if parts.query else []
    query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical = "\n".join([method.upper(), parts.path or "/", query, canonical_headers, signed, payload_sha256])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_access_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return out


# ---------------------------------------------------------------------------- the bucket


def _error_code(body: bytes) -> tuple[str, str]:
    """S3's ``<Error><Code>…</Code><Message>…</Message>`` (empty strings if it is not that)."""
    try:
        root = ET.fromstring(body[:65536])
    except ET.ParseError:
        return "", ""
    code = (root.findtext("Code") or root.findtext(f"{_S3_NS}Code") or "").strip()
    message = (root.findtext("Message") or root.findtext(f"{_S3_NS}Message") or "").strip()
    return code[:60], message[:160]


class S3Blobs:
    """The bucket as :class:`bot.image_store.ImageStore` uses it (see ``Blobs`` there)."""

    def __init__(self, config: S3Config, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.where = config.where
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout), limits=httpx.Limits(max_connections=16), follow_redirects=False
        )

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def key_for(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.config.prefix}/{name}" if self.config.prefix else name

    def _url(self, key: str = "", query: str = "") -> str:
        c = self.config
        scheme, _, host = c.endpoint.partition("://")
        path = "/" + quote(key, safe="/-_.~")
        if c.path_style:
            path = f"/{quote(c.bucket, safe='-_.~')}" + (path if key else "")
            if not key and not query:
                path += "/"
        else:
            host = f"{c.bucket}.{host}"
        return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")

    async def _send(
        self,
        op: str,
        method: str,
        key: str = "",
        *,
        query: str = "",
        body: bytes = b"",
        payload_sha256: str = EMPTY_SHA256,
        headers: Mapping[str, str] | None = None,
        cap: int | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, httpx.Headers, bytes]:
        """One signed request; ``(status, headers, body)`` for the ``ok`` statuses, else
        :class:`S3Unavailable`. The body read stops past ``cap`` bytes."""
        c = self.config
        url = self._url(key, query)
        signed = sign(
            method,
            url,
            dict(headers or {}),
            payload_sha256=payload_sha256,
            access_key_id=c.access_key_id,
            secret_access_key=c.secret_access_key,
            region=c.region,
            session_token=c.session_token,
            when=dt.datetime.now(dt.UTC),
        )
        what = f"{op} {c.where}/{key.removeprefix(c.prefix).lstrip('/')}" if key else f"{op} {c.where}"
        limit = cap if cap is not None else 65536
        deadline = 2 * c.timeout + (len(body) + (cap or 0)) / 1e6  # past any single step's timeout
        try:
            async with asyncio.timeout(deadline), self._client.stream(method, url, content=body or None, headers=signed) as resp:
                data = bytearray()
                # Decoded (a listing may come gzipped), counted as it arrives: never more than limit.
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        if resp.status_code in ok:
                            raise S3TooLarge(f"S3 image store: {what}: the answer is larger than the {limit} bytes expected")
                        break
        except httpx.TimeoutException:
            raise S3Unavailable(f"S3 image store: {what}: no answer within {c.timeout:g} s (NB_S3_TIMEOUT)") from None
        except TimeoutError:
            raise S3Unavailable(f"S3 image store: {what}: not done within {deadline:.1f} s (twice NB_S3_TIMEOUT + 1 s per MB)") from None
        except httpx.HTTPError as exc:
            raise S3Unavailable(f"S3 image store: {what}: cannot reach {c.endpoint} ({type(exc).__name__})") from None
        if resp.status_code in ok:
            return resp.status_code, resp.headers, bytes(data)
        code, message = _error_code(bytes(data))
        hint = _HINTS.get(code, "")
        detail = f"HTTP {resp.status_code}" + (f" {code}" if code else "") + (f" ({message})" if message else "")
        raise S3Unavailable(f"S3 image store: {what} failed: {detail}" + (f"; {hint}" if hint else ""))

    async def has(self, sha256: str, size: int) -> bool:
        status, headers, _ = await self._send("HEAD", "HEAD", self.key_for(sha256), ok=(200, 404))
        return status == 200 and headers.get("content-length") == str(size)

    async def write(self, sha256: str, data: bytes, mime: str) -> None:
        # Signed with the body's SHA-256 (its name): S3 refuses bytes that changed on the way.
        await self._send(
            "PUT",
            "PUT",
            self.key_for(sha256),
            body=data,
            payload_sha256=sha256,
            headers={"content-type": mime or "application/octet-stream"},
        )

    async def read(self, sha256: str, size: int) -> bytes | None:
        """The object's bytes if they still hash to their name; None when missing or damaged.
        At most ``size`` bytes (what the index recorded) are read."""
        try:
            status, _, data = await self._send("GET", "GET", self.key_for(sha256), cap=size, ok=(200, 404))
        except S3TooLarge:
            return None  # not the picture the index recorded: damaged, as a hash mismatch is
        if status == 404:
            return None
        if await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()) != sha256:
            return None
        return data

    async def delete(self, shas: list[str]) -> None:
        """Delete the objects (a missing one is no error: S3 answers 204 either way)."""
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(sha: str) -> None:
            async with gate:
                await self._send("DELETE", "DELETE", self.key_for(sha), ok=(200, 204, 404))

        results = await asyncio.gather(*(one(s) for s in shas), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise S3Unavailable(f"{len(failed)} of {len(shas)} deletion(s) failed; first: {failed[0]}")

    async def listing(self) -> AsyncIterator[tuple[str, float]]:
        """``(sha256, last modified as a Unix time)`` for every object under the prefix that is
        named like a picture (ListObjectsV2, 1,000 a page)."""
        base = f"{self.config.prefix}/" if self.config.prefix else ""
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": base}
            if token:
                params["continuation-token"] = token
            _, _, body = await self._send("LIST", "GET", query=encode_query(params), cap=MAX_LISTING_BYTES)
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                raise S3Unavailable(f"S3 image store: LIST {self.where}: the answer is not a bucket listing") from None
            for item in root.iter(f"{_S3_NS}Contents"):
                name = (item.findtext(f"{_S3_NS}Key") or "").removeprefix(base)
                sha = name.rpartition("/")[2]
                if re.fullmatch(r"[0-9a-f]{64}", sha) and name == f"{sha[:2]}/{sha}":
                    modified = item.findtext(f"{_S3_NS}LastModified") or ""
                    try:
                        when = dt.datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()
                    except ValueError:
                        when = 0.0
                    yield sha, when
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
                return

    async def check(self) -> None:
        """One listing request: the settings reach a bucket that lets this key in (or S3Unavailable)."""
        params = {"list-type": "2", "max-keys": "1", "prefix": f"{self.config.prefix}/" if self.config.prefix else ""}
        await self._send("LIST", "GET", query=encode_query(params), cap=MAX_LISTING_BYTES)
