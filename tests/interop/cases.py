"""The interop matrix: each case run by the real relay client through LiteLLM's four routes.

A case returns an :class:`Outcome`: whether the client did what a member should get (``ok``)
and a one-line account for the report table. The pytest file asserts ``ok`` per cell;
``python -m tests.interop.cases`` prints the whole table (used for the before/after record).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.relay.catalogue import pixel_size
from bot.relay.client import RelayClient
from bot.relay.types import GenerationRequest, InputImage, NoImage, RelayConfig, RelayFailed
from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble

from .gateway import MASTER_KEY

MODEL = "gemini-3-pro-image-preview"
QUOTA = "You exceeded your current quota, please check your plan and billing details."


@dataclass
class Outcome:
    ok: bool
    text: str


def routes(gateway_url: str) -> dict[str, RelayConfig]:
    """How an operator points the bot at each LiteLLM route."""
    return {
        "gemini pass-through (/gemini)": RelayConfig(
            base_url=f"{gateway_url}/gemini", dialect="gemini", auth="query", api_key=MASTER_KEY, name="ll-pass"
        ),
        "gemini native (/v1beta)": RelayConfig(
            base_url=gateway_url, dialect="gemini", auth="x-goog-api-key", api_key=MASTER_KEY, name="ll-native"
        ),
        "chat completions": RelayConfig(base_url=gateway_url, dialect="openai-chat", auth="bearer", api_key=MASTER_KEY, name="ll-chat"),
        "images gen/edits": RelayConfig(base_url=gateway_url, dialect="openai-images", auth="bearer", api_key=MASTER_KEY, name="ll-images"),
    }


def _client() -> RelayClient:
    return RelayClient(max_attempts=2, backoff_base=0.05, max_backoff=30.0, timeout=120.0)


def _describe_error(exc: BaseException) -> str:
    code = getattr(exc, "exit_code", "?")
    text = re.sub(r"\s+", " ", str(exc))
    return f"exit {code}: {text[:110]}{'…' if len(text) > 110 else ''}"


def _notes(result: Any) -> list[str]:
    return [str(n) for n in getattr(result, "notes", None) or []]


async def _generate(relay: RelayConfig, request: GenerationRequest) -> Any:
    async with _client() as client:
        return await client.generate(relay, request)


def _same_picture(double: RelayDouble, image: bytes) -> bool:
    served = double.images_served
    return bool(served) and served[-1] == image


async def text_to_image(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("image", width=96, height=96)
    try:
        result = await _generate(relay, GenerationRequest(prompt="a lighthouse at dusk", model=MODEL))
    except Exception as exc:  # noqa: BLE001 - the table records whatever happened
        return Outcome(False, _describe_error(exc))
    same = _same_picture(double, result.image)
    return Outcome(same, f"picture {result.width}×{result.height}" + ("" if same else " (not the one made)"))


async def edit(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("image", width=96, height=72)
    source = make_image(320, 240)
    try:
        result = await _generate(relay, GenerationRequest(prompt="make it night", model=MODEL, images=[InputImage(source, "image/png")]))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    sent = _upstream_carries_input(double)
    same = _same_picture(double, result.image)
    return Outcome(same and sent, f"picture {result.width}×{result.height}" + ("" if sent else " (input not forwarded)"))


def _upstream_carries_input(double: RelayDouble) -> bool:
    for req in reversed(double.requests):
        body = req.json if isinstance(req.json, dict) else {}
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if isinstance(part, dict) and (part.get("inlineData") or part.get("inline_data")):
                    return True
        return False
    return False


async def two_turn(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("image", width=96, height=96)
    try:
        first = await _generate(relay, GenerationRequest(prompt="a red fox", model=MODEL))
        history: list[dict[str, Any]] = []
        if first.model_turn is not None and first.user_turn is not None:
            history = [first.user_turn, first.model_turn]
        else:  # what the bot does on dialects without turns: the latest picture as input
            history = [
                {"role": "user", "parts": [{"text": "a red fox"}]},
                {"role": "model", "parts": [{"inlineData": {"mimeType": first.mime_type, "data": _b64(first.image)}}]},
            ]
        second = await _generate(relay, GenerationRequest(prompt="now in snow", model=MODEL, history=history))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    body = double.requests[-1].json if isinstance(double.requests[-1].json, dict) else {}
    contents = body.get("contents") or []
    signed = any(
        isinstance(p, dict) and p.get("thoughtSignature") for c in contents if c.get("role") == "model" for p in c.get("parts") or []
    )
    if relay.dialect == "gemini":
        ok = len(contents) == 3 and signed and second.model_turn is not None
        return Outcome(
            ok, "history replayed, signatures intact" if ok else f"history lost ({len(contents)} turns upstream, signed={signed})"
        )
    ok = _upstream_carries_input(double) and _same_picture(double, second.image)
    return Outcome(ok, "no turns on this dialect: latest picture sent as input" if ok else "latest picture not forwarded")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def wide_2k(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("image")  # the double draws what the upstream request asked for
    want = pixel_size(MODEL, "16:9", "2K")
    try:
        result = await _generate(relay, GenerationRequest(prompt="a wide valley", model=MODEL, aspect_ratio="16:9", size="2K"))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    got = (result.width, result.height)
    notes = _notes(result)
    if got == want:
        return Outcome(True, f"{got[0]}×{got[1]} as asked")
    if notes:
        return Outcome(True, f"{got[0]}×{got[1]}; member told: {notes[0][:90]}")
    return Outcome(False, f"{got[0]}×{got[1]} instead of {want[0]}×{want[1]}, reported as success")


async def rate_limited(relay: RelayConfig, double: RelayDouble, caplog: Any = None) -> Outcome:
    double.default = Behaviour("error", status=429, retry_after=1, message=QUOTA)
    handler = _Capture()
    logging.getLogger("bot.relay").addHandler(handler)
    started = time.monotonic()
    try:
        await _generate(relay, GenerationRequest(prompt="x", model=MODEL))
    except RelayFailed as exc:
        elapsed = time.monotonic() - started
        waits = [float(m) for m in re.findall(r"retrying in ([\d.]+) s", "\n".join(handler.lines))]
        readable = exc.relay_message.strip() == QUOTA or exc.relay_message.startswith(QUOTA)
        honoured = bool(waits) and min(waits) >= 1.0
        ok = readable and honoured and exc.status == 429 and exc.retryable
        shown = re.sub(r"\s+", " ", exc.relay_message)
        return Outcome(
            ok,
            f"waited {', '.join(f'{w:.2f}' for w in waits) or '-'} s (hint 1 s); shown: {shown[:70]}{'…' if len(shown) > 70 else ''} [{elapsed:.1f} s]",
        )
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    finally:
        logging.getLogger("bot.relay").removeHandler(handler)
    return Outcome(False, "succeeded although every upstream call was a 429")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def unavailable(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("error", status=503)
    try:
        await _generate(relay, GenerationRequest(prompt="x", model=MODEL))
    except RelayFailed as exc:
        shown = re.sub(r"\s+", " ", exc.relay_message)
        ok = exc.status == 503 and exc.retryable and "{" not in shown and "litellm" not in shown.lower()
        return Outcome(ok, f"HTTP {exc.status}, failover-able={exc.retryable}; shown: {shown[:80]}")
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    return Outcome(False, "succeeded although the upstream was down")


async def safety_block(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("blocked", reason="PROHIBITED_CONTENT")
    try:
        result = await _generate(relay, GenerationRequest(prompt="something forbidden", model=MODEL))
    except NoImage as exc:
        return Outcome(True, f"no picture, exit 3 ({exc.reason}: {exc.detail or '-'})")
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    return Outcome(False, f"a picture ({result.width}×{result.height}) for a blocked prompt")


async def big_picture(relay: RelayConfig, double: RelayDouble) -> Outcome:
    # 2976×2976 of noise: a PNG of about 12.7 MB (about 17 MB of base64 in the answer).
    double.default = Behaviour("image", huge=True, width=2976, height=2976)
    try:
        result = await _generate(relay, GenerationRequest(prompt="noise", model=MODEL))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    same = _same_picture(double, result.image)
    return Outcome(same, f"{len(result.image) / 1e6:.1f} MB " + ("byte-exact" if same else "NOT the picture made"))


async def thought_drafts(relay: RelayConfig, double: RelayDouble) -> Outcome:
    double.default = Behaviour("image", width=96, height=96, thoughts=4)
    try:
        result = await _generate(relay, GenerationRequest(prompt="think first", model=MODEL))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, _describe_error(exc))
    same = _same_picture(double, result.image)
    return Outcome(same, "the final picture" if same else f"a draft ({result.width}×{result.height}) instead of the final picture")


CASES: dict[str, Callable[[RelayConfig, RelayDouble], Awaitable[Outcome]]] = {
    "text→image": text_to_image,
    "edit": edit,
    "two-turn session": two_turn,
    "16:9 2K": wide_2k,
    "429 + retry hint": rate_limited,
    "503": unavailable,
    "safety block": safety_block,
    "12 MB picture": big_picture,
    "thought drafts": thought_drafts,
}


def main(argv: list[str] | None = None) -> int:
    """Print the route × case table (markdown) against a freshly started gateway: LiteLLM's
    defaults, or with ``--drop-params`` (``litellm_settings: drop_params: true``)."""
    import argparse
    import tempfile
    from pathlib import Path

    from .gateway import UPSTREAM_KEY, litellm_binary, start

    parser = argparse.ArgumentParser(prog="python -m tests.interop.cases")
    parser.add_argument("--drop-params", action="store_true")
    parser.add_argument("--num-retries", type=int, default=None)
    args = parser.parse_args(argv)
    binary = litellm_binary()
    with RelayDouble(api_key=UPSTREAM_KEY) as double, tempfile.TemporaryDirectory() as tmp:
        gateway = start(binary, double.url, Path(tmp), drop_params=args.drop_params, num_retries=args.num_retries)
        try:
            table = routes(gateway.url)
            print("| case | " + " | ".join(table) + " |")
            print("|---" * (len(table) + 1) + "|")
            for name, case in CASES.items():
                cells = []
                for relay in table.values():
                    double.reset()
                    outcome = asyncio.run(case(relay, double))
                    cells.append(("✅ " if outcome.ok else "❌ ") + outcome.text.replace("|", "/"))
                print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
