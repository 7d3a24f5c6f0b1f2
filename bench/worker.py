"""One measurement in a fresh process (so peak RSS belongs to one client and one load).

    python -m bench.worker answers --client ours --url URL --size 4K --in-flight 8 --answers 8 --expect LEN:SHA
    python -m bench.worker fit --png PATH --limit BYTES

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import io
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

MODEL = "gemini-3-pro-image-preview"
PROMPT = "a ripe banana on a marble table, studio light"
API_KEY = "bench-key"

Fetch = Callable[[], Awaitable[bytes]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: on Linux a forked child's ru_maxrss starts from its parent's peak,
    # so a worker spawned by a bigger parent would report the parent's figure.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# -- the three clients -------------------------------------------------------------------------


async def ours(url: str, size: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    from bot.relay.client import RelayClient
    from bot.relay.types import GenerationRequest, RelayConfig

    relay = RelayConfig(base_url=url, dialect="gemini", auth="x-goog-api-key", api_key=API_KEY)
    client = RelayClient(timeout=600.0, max_attempts=1)
    request = GenerationRequest(prompt=PROMPT, model=MODEL, size=size, aspect_ratio="1:1")

    async def fetch() -> bytes:
        return (await client.generate(relay, request)).image

    return fetch, client.aclose


async def streamed(url: str, size: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    """``ours`` with live previews: streamGenerateContent?alt=sse with the model's thoughts
    (the double sends two thought texts and two draft pictures before the picture)."""
    from bot.relay import previews

    fetch_plain, close = await ours(url, size)

    async def fetch() -> bytes:
        shown: list[int] = []
        with previews.receiving(lambda p: shown.append(p.draft)):
            image = await fetch_plain()
        if 2 not in shown:
            raise SystemExit("streamed: the drafts were not handed on")
        return image

    return fetch, close


async def decoder(url: str, size: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    """Only this project's StreamDecoder over an httpx stream: the decoder's own cost, without
    the rest of RelayClient.generate (validation, retries, parsing the answer)."""
    import httpx

    from bot.relay.blob import b64_bytes
    from bot.relay.stream import StreamDecoder

    http = httpx.AsyncClient(timeout=600.0)
    body = json.dumps(_gemini_body(size)).encode()

    async def fetch() -> bytes:
        dec = StreamDecoder()
        url_ = f"{url}/v1beta/models/{MODEL}:generateContent"
        async with http.stream(
            "POST", url_, content=body, headers={"x-goog-api-key": API_KEY, "content-type": "application/json"}
        ) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                await dec.afeed(chunk)
        parts = dec.close()["candidates"][0]["content"]["parts"]
        return [b64_bytes(p["inlineData"]["data"]) for p in parts if "inlineData" in p and not p.get("thought")][-1]

    return fetch, http.aclose


def _gemini_body(size: str) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1", "imageSize": size}},
    }


async def sdk(url: str, size: str, *, transport: str = "default") -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=url, timeout=600_000)
    if transport == "httpx":
        # The SDK uses aiohttp whenever it can import it (discord.py depends on it, so here it
        # always can); handing it an httpx transport selects its httpx code path instead.
        import httpx

        options = types.HttpOptions(base_url=url, timeout=600_000, async_client_args={"transport": httpx.AsyncHTTPTransport()})
    client = genai.Client(api_key=API_KEY, http_options=options)
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"],
        image_config=types.ImageConfig(aspect_ratio="1:1", image_size=size),
    )

    async def fetch() -> bytes:
        answer = await client.aio.models.generate_content(model=MODEL, contents=PROMPT, config=config)
        parts = answer.candidates[0].content.parts
        return [p.inline_data.data for p in parts if p.inline_data and not p.thought][-1]

    async def close() -> None:
        await client.aio.aclose()

    return fetch, close


async def naive(url: str, size: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    import httpx

    http = httpx.AsyncClient(timeout=600.0)
    body = _gemini_body(size)

    async def fetch() -> bytes:
        response = await http.post(f"{url}/v1beta/models/{MODEL}:generateContent", json=body, headers={"x-goog-api-key": API_KEY})
        response.raise_for_status()
        answer = json.loads(response.content)
        parts = answer["candidates"][0]["content"]["parts"]
        return [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p and not p.get("thought")][-1]

    return fetch, http.aclose


async def sdk_httpx(url: str, size: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    return await sdk(url, size, transport="httpx")


CLIENTS = {"ours": ours, "streamed": streamed, "decoder": decoder, "sdk": sdk, "sdk-httpx": sdk_httpx, "naive": naive}


# -- the event-loop probe ----------------------------------------------------------------------


class Probe:
    """Sleeps 1 ms over and over and records how late it wakes: the loop's stalls."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        # CPU time the loop's thread used during each late tick: tells a stall the loop caused
        # (busy running callbacks) from one the OS caused (the process not scheduled).
        self.busy: list[float] = []
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop:
            start, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            self.lateness.append(time.perf_counter() - start - 0.001)
            self.busy.append(time.thread_time() - cpu)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task:
            await self._task

    def stats(self) -> dict[str, float]:
        ordered = sorted(self.lateness) or [0.0]
        busy = sorted(self.busy) or [0.0]
        return {
            "worst_stall_ms": ordered[-1] * 1000,
            "p99_stall_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
            "worst_busy_ms": busy[-1] * 1000,
            "p99_busy_ms": busy[int(0.99 * (len(busy) - 1))] * 1000,
            "samples": len(ordered),
        }


async def probe_cpu_rate() -> float:
    """CPU seconds per wall second the probe itself costs (subtracted from the clients' CPU)."""
    probe = Probe()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    probe.start()
    await asyncio.sleep(0.5)
    await probe.stop()
    return (cpu_seconds() - cpu0) / (time.perf_counter() - t0)


async def measure_answers(args: argparse.Namespace) -> dict[str, Any]:
    length, sha = args.expect.split(":")
    length = int(length)
    rss_start = current_rss_mb()
    fetch, close = await CLIENTS[args.client](args.url, args.size)

    # Warm up (imports, connection, first-call setup) and check the bytes once, in full.
    image = await fetch()
    if len(image) != length or hashlib.sha256(image).hexdigest() != sha:
        raise SystemExit(f"{args.client}: wrong image ({len(image)} bytes)")
    head, tail = image[:4096], image[-4096:]
    del image
    gc.collect()
    rss_ready = current_rss_mb()
    probe_rate = await probe_cpu_rate()

    rounds = max(1, args.answers // args.in_flight)

    async def lane() -> None:
        for _ in range(rounds):
            got = await fetch()
            # A cheap check inside the measured phase (hashing 27 MB would itself stall the loop).
            if len(got) != length or got[:4096] != head or got[-4096:] != tail:
                raise SystemExit(f"{args.client}: wrong image ({len(got)} bytes)")
            del got

    probe = Probe()
    probe.start()
    await asyncio.sleep(0.02)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(args.in_flight)))
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0 - probe_rate * wall
    await probe.stop()
    await close()
    answers = rounds * args.in_flight
    return {
        "client": args.client,
        "size": args.size,
        "in_flight": args.in_flight,
        "answers": answers,
        "cpu_per_answer_s": cpu / answers,
        "wall_per_answer_s": wall / answers,
        "wall_s": wall,
        **probe.stats(),
        "peak_rss_mb": peak_rss_mb(),
        "rss_start_mb": rss_start,
        "rss_ready_mb": rss_ready,
        "probe_cpu_rate": probe_rate,
    }


# -- the fitting step --------------------------------------------------------------------------


async def measure_fit(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    from bot.imaging import fit_for_upload, fit_for_upload_async

    data = open(args.png, "rb").read()
    runs = []
    fitted = None
    for _ in range(args.repeat):
        t0 = time.thread_time()
        fitted = fit_for_upload(data, "image/png", args.limit)
        runs.append(time.thread_time() - t0)
    assert fitted is not None
    # Where the time goes: decoding the PNG, then encoding the JPEG.
    t0 = time.thread_time()
    img = Image.open(io.BytesIO(data))
    img.load()
    decode = time.thread_time() - t0
    t0 = time.thread_time()
    img.save(io.BytesIO(), "JPEG", quality=92)
    encode = time.thread_time() - t0
    del img
    # The async version, with the loop probed meanwhile: Pillow releases the GIL.
    probe = Probe()
    probe.start()
    await asyncio.sleep(0.02)
    await fit_for_upload_async(data, "image/png", args.limit)
    await asyncio.sleep(0.02)
    await probe.stop()
    runs.sort()
    return {
        "input_bytes": len(data),
        "limit": args.limit,
        "cpu_s_median": runs[len(runs) // 2],
        "cpu_s_min": runs[0],
        "decode_s": decode,
        "encode_s": encode,
        "output_bytes": len(fitted.data),
        "how": fitted.how,
        "mime_type": fitted.mime_type,
        "width": fitted.width,
        "height": fitted.height,
        "async_worst_stall_ms": probe.stats()["worst_stall_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("answers")
    a.add_argument("--client", choices=sorted(CLIENTS), required=True)
    a.add_argument("--url", required=True)
    a.add_argument("--size", default="4K")
    a.add_argument("--in-flight", type=int, default=1)
    a.add_argument("--answers", type=int, default=1)
    a.add_argument("--expect", required=True, help="LENGTH:SHA256 of the picture every answer must carry")
    f = sub.add_parser("fit")
    f.add_argument("--png", required=True)
    f.add_argument("--limit", type=int, default=10 * 2**20)
    f.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    run = measure_answers if args.mode == "answers" else measure_fit
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
