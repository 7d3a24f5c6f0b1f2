"""The relay client (and the bot, for the relay test and what a member sees) through a real
LiteLLM proxy in front of the relay double acting as Google's API.

Every cell of the route × case matrix (``cases.py``) is one test; then the gateway-specific
behaviours: LiteLLM's own timeout (408), its parameter refusals, the operator's notice that
retries multiply, and the ``/admin relay test`` probe.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from bot.relay.client import RelayClient
from bot.relay.types import GenerationRequest, InputImage, RelayConfig, RelayFailed, RelayTimeout
from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble

from . import cases
from .gateway import MASTER_KEY, Gateway

ROUTES = ("gemini pass-through (/gemini)", "gemini native (/v1beta)", "chat completions", "images gen/edits")


@pytest.mark.parametrize("case", list(cases.CASES))
@pytest.mark.parametrize("route", ROUTES)
async def test_matrix(gateway: Gateway, double: RelayDouble, route: str, case: str) -> None:
    relay = cases.routes(gateway.url)[route]
    outcome = await cases.CASES[case](relay, double)
    assert outcome.ok, f"{route} × {case}: {outcome.text}"


def _relay(gateway: Gateway, route: str) -> RelayConfig:
    return cases.routes(gateway.url)[route]


async def test_images_route_resends_once_without_response_format_and_keeps_ratio_and_size(
    gateway: Gateway, double: RelayDouble, caplog: pytest.LogCaptureFixture
) -> None:
    double.default = Behaviour("image")
    caplog.set_level(logging.INFO, logger="bot.relay")
    async with RelayClient(max_attempts=2, backoff_base=0.05, timeout=120) as client:
        edited = await client.generate(
            _relay(gateway, "images gen/edits"),
            GenerationRequest(
                prompt="wider", model=cases.MODEL, images=[InputImage(make_image(300, 300), "image/png")], aspect_ratio="21:9", size="1K"
            ),
        )
    assert (edited.width, edited.height) == (1584, 672) and not edited.notes
    # LiteLLM refused response_format (HTTP 400, nothing sent upstream); the one resend kept
    # the multipart form (a "form" inside "response_format" is no reason to switch to JSON).
    assert "does not take response_format" in caplog.text
    assert "resending as JSON" not in caplog.text
    upstream = [r for r in double.requests if ":generateContent" in r.path]
    assert len(upstream) == 1
    assert upstream[0].json["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "1K"}


async def test_a_shape_the_relay_did_not_honour_is_told_not_reported_as_success(gateway: Gateway, double: RelayDouble) -> None:
    # The upstream ignores the ratio (as a gateway that drops it would): a square comes back.
    double.default = Behaviour("image", width=1024, height=1024)
    async with RelayClient(max_attempts=1, timeout=120) as client:
        result = await client.generate(
            _relay(gateway, "chat completions"), GenerationRequest(prompt="a valley", model=cases.MODEL, aspect_ratio="16:9", size="2K")
        )
    assert [n.key for n in result.notes] == ["note.ratio_differs", "note.size_differs"]
    assert "16:9" in str(result.notes[0]) and "1024×1024" in str(result.notes[0])


async def test_controls_the_openai_formats_cannot_carry_are_noted(gateway: Gateway, double: RelayDouble) -> None:
    request = GenerationRequest(prompt="today's weather map", model="gemini-3.1-flash-image-preview", grounding=True, thinking="high")
    async with RelayClient(max_attempts=1, timeout=120) as client:
        for route in ("chat completions", "images gen/edits"):
            result = await client.generate(_relay(gateway, route), request)
            assert {n.key for n in result.notes} == {"note.grounding_dropped", "note.thinking_dropped"}, route
        native = await client.generate(_relay(gateway, "gemini native (/v1beta)"), request)
    assert not native.notes
    assert double.requests[-1].json["tools"] == [{"googleSearch": {}}]


async def test_the_gateways_own_timeout_is_explained_retried_once_and_failover_able(gateway: Gateway, double: RelayDouble) -> None:
    double.default = Behaviour("slow", delay=4.0, width=64, height=64)
    relay = replace(_relay(gateway, "gemini native (/v1beta)"), model_aliases={cases.MODEL: "timeout-2s"})
    async with RelayClient(max_attempts=4, backoff_base=0.05, timeout=120) as client:
        with pytest.raises(RelayTimeout) as caught:
            await client.generate(relay, GenerationRequest(prompt="slow", model=cases.MODEL))
    exc = caught.value
    assert exc.status == 408 and exc.retryable and exc.key == "error.gateway_timeout"
    assert "stopped waiting" in str(exc) and "its own time limit" in str(exc)
    assert exc.params.get("attempts") == 2  # one more try, not four: the same limit applies again


async def test_the_operator_is_told_once_per_relay_that_litellm_retries_too(
    gateway: Gateway, double: RelayDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.relay")
    relay = replace(_relay(gateway, "gemini native (/v1beta)"), name="ll-notice-once")
    async with RelayClient(max_attempts=3, timeout=120) as client:
        for _ in range(2):
            await client.generate(relay, GenerationRequest(prompt="x", model=cases.MODEL))
    told = [r.getMessage() for r in caplog.records if "LiteLLM gateway" in r.getMessage()]
    assert len(told) == 1 and "ll-notice-once" in told[0] and "num_retries: 0" in told[0] and "3 attempts" in told[0]
    assert MASTER_KEY not in caplog.text


@pytest.mark.parametrize("route", ["gemini pass-through (/gemini)", "gemini native (/v1beta)", "chat completions", "images gen/edits"])
async def test_relay_probe_works_on_every_route(gateway: Gateway, double: RelayDouble, route: str) -> None:
    async with RelayClient() as client:
        latency = await client.probe(_relay(gateway, route))
    assert 0 <= latency < 30
    assert not [r for r in double.requests if ":generateContent" in r.path]  # nothing generated, nothing billed


async def test_probe_with_a_wrong_key_says_so(gateway: Gateway, double: RelayDouble) -> None:
    relay = replace(_relay(gateway, "gemini native (/v1beta)"), api_key="sk-not-the-gateway-key")
    async with RelayClient() as client:
        with pytest.raises(RelayFailed) as caught:
            await client.probe(relay)
    assert caught.value.status in (400, 401, 403) and "sk-not-the-gateway-key" not in str(caught.value)


async def test_admin_relay_test_and_what_the_member_sees_through_litellm(gateway: Gateway, double: RelayDouble, tmp_path: Path) -> None:
    from tests.test_admin_e2e import GUILD_KEY, text_of, world  # the real bot against the Discord double

    async with world(tmp_path) as (w, bot):
        await w.add_relay("litellm", gateway.url, MASTER_KEY, auth="x-goog-api-key")
        tested = await w.ask("relay", "test", name="litellm")
        assert re.search(r"answered in \d+ ms", text_of(tested)), text_of(tested)

        # A member asks 16:9 on the OpenAI Images route of a gateway whose upstream ignores it.
        await w.add_relay("images", gateway.url, MASTER_KEY, dialect="openai-images", auth="bearer")
        await w.ask("relay", "order", order="images, litellm")
        double.default = Behaviour("image", width=512, height=512)
        inter, mark = await w.imagine(w.alice, prompt="a wide harbour", aspect_ratio="16:9")
        post = await w.result_post(since=mark, timeout=60)
        shown = text_of(post)
        assert "16:9" in shown and "512×512" in shown and "did not pass the ratio on" in shown, shown
        assert GUILD_KEY not in shown and MASTER_KEY not in shown
        await bot.services.jobs.join()

        # Google's quota error through both relays: the member reads Google's words.
        double.default = Behaviour("error", status=429, retry_after=0.2, message=cases.QUOTA)
        mark = w.dd.mark()
        await w.imagine(w.alice, prompt="another harbour")
        failed = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: bool((c.json or {}).get("embeds")), timeout=120
        )
        said = failed.json["embeds"][0]["description"]
        assert cases.QUOTA in said and "litellm" not in said.lower() and '{"error"' not in said, said
        assert MASTER_KEY not in json.dumps(failed.json)


def _cli(gateway: Gateway, tmp_path: Path, fmt: str, auth: str, *args: str):
    from tests.test_cli import cli

    env = {"NB_RELAY_URL": gateway.url, "NB_RETRY_ATTEMPTS": "2", "NB_RETRY_MAX_BACKOFF": "30"}
    return cli(*args, "--json", cwd=tmp_path, fmt=fmt, auth=auth, key=MASTER_KEY, env=env)


def test_cli_on_the_images_route_gets_16_9_2k_or_says_it_did_not(gateway: Gateway, double: RelayDouble, tmp_path: Path) -> None:
    double.default = Behaviour("image")
    run = _cli(
        gateway, tmp_path, "openai-images", "bearer", "a wide valley", "--model", cases.MODEL, "--aspect-ratio", "16:9", "--size", "2k"
    )
    assert run.code == 0, run.err
    assert (run.last_json["width"], run.last_json["height"]) == (2752, 1536) and run.last_json["notes"] == []

    double.default = Behaviour("image", width=512, height=512)  # an upstream that ignores both
    run = _cli(
        gateway, tmp_path, "openai-images", "bearer", "a wide valley", "--model", cases.MODEL, "--aspect-ratio", "16:9", "--size", "2k"
    )
    assert run.code == 0, run.err
    assert [n["key"] for n in run.last_json["notes"]] == ["note.ratio_differs", "note.size_differs"]
    assert "did not pass the ratio on" in run.err and "did not pass the size on" in run.err


def test_cli_shows_the_providers_words_for_a_quota_error_through_litellm(gateway: Gateway, double: RelayDouble, tmp_path: Path) -> None:
    double.default = Behaviour("error", status=429, retry_after=1, message=cases.QUOTA)
    run = _cli(gateway, tmp_path, "gemini", "x-goog-api-key", "x", "--model", cases.MODEL)
    assert run.code == 4, run.err
    assert cases.QUOTA in run.err
    assert "litellm.RateLimitError" not in run.err and '{"error"' not in run.err and "Traceback" not in run.err
    assert MASTER_KEY not in run.err + run.out


@pytest.fixture(scope="module")
def tuned_gateway(litellm_bin: Path, upstream: RelayDouble, tmp_path_factory: pytest.TempPathFactory):
    """LiteLLM set up as the README advises: no retries of its own; drop_params on."""
    from . import gateway as gw

    proxy = gw.start(litellm_bin, upstream.url, tmp_path_factory.mktemp("litellm-tuned"), num_retries=0, drop_params=True)
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_retries_multiply_on_defaults_and_not_with_num_retries_0(
    gateway: Gateway, tuned_gateway: Gateway, double: RelayDouble
) -> None:
    double.default = Behaviour("error", status=429, retry_after=0.2, message=cases.QUOTA)
    calls = {}
    for name, proxy in (("defaults", gateway), ("num_retries 0", tuned_gateway)):
        before = len(double.requests)
        async with RelayClient(max_attempts=2, backoff_base=0.05, timeout=120) as client:
            with pytest.raises(RelayFailed):
                await client.generate(_relay(proxy, "gemini native (/v1beta)"), GenerationRequest(prompt="x", model=cases.MODEL))
        calls[name] = len(double.requests) - before
    assert calls == {"defaults": 6, "num_retries 0": 2}, calls


async def test_with_drop_params_the_images_route_takes_the_first_request_as_is(
    tuned_gateway: Gateway, double: RelayDouble, caplog: pytest.LogCaptureFixture
) -> None:
    double.default = Behaviour("image")
    caplog.set_level(logging.INFO, logger="bot.relay")
    async with RelayClient(max_attempts=1, timeout=120) as client:
        result = await client.generate(
            _relay(tuned_gateway, "images gen/edits"), GenerationRequest(prompt="tall", model=cases.MODEL, aspect_ratio="9:16", size="1K")
        )
    assert (result.width, result.height) == (768, 1376) and not result.notes
    assert "resending" not in caplog.text
