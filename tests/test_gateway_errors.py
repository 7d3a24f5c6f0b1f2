"""Reading gateways' errors: the texts below are LiteLLM 1.108.7's own answers, captured in
front of the relay double (the interop suite runs the same through a live proxy)."""

from __future__ import annotations

import base64
import json

from bot.relay import gateway_errors as ge
from bot.relay.answer import error_info

QUOTA = "You exceeded your current quota, please check your plan and billing details."
# LiteLLM's 429 body on its /v1beta and /v1/chat routes (Google's error as text in its own).
LITELLM_429 = json.dumps(
    {
        "error": {
            "message": "litellm.RateLimitError: litellm.RateLimitError: GeminiException - "
            + json.dumps(
                {
                    "error": {
                        "code": 429,
                        "message": QUOTA,
                        "status": "RESOURCE_EXHAUSTED",
                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
                    }
                }
            )
            + "\n\nLiteLLM: model group 'gemini-3-pro-image-preview' failed with the error above. No fallback was attempted.",
            "type": "throttling_error",
            "param": None,
            "code": "429",
        }
    }
)
LITELLM_PARAM = json.dumps(
    {
        "error": {
            "message": "litellm.UnsupportedParamsError: Setting `response_format` is not supported by gemini, gemini-3-pro-image-preview. "
            "To drop it from the call, set `litellm.drop_params = True`.\n\nLiteLLM: model group 'gemini-3-pro-image-preview' failed with the error above. No fallback was attempted.",
            "type": "invalid_request_error",
            "param": None,
            "code": "400",
        }
    }
)


def test_the_innermost_provider_message_and_its_retry_delay_come_out_of_litellms_wrapping() -> None:
    info = ge.readable(error_info(json.loads(LITELLM_429)))
    assert info.message == QUOTA
    assert info.retry_delay == 7.0 and info.code == 429 and info.status_text == "RESOURCE_EXHAUSTED"


def test_python_repr_and_plain_text_delays_are_read_too() -> None:
    text = "GeminiException - {'error': {'code': 503, 'message': 'The model is overloaded.', 'status': 'UNAVAILABLE'}}"
    info = ge.readable(error_info({"error": {"message": text}}))
    assert info.message == "The model is overloaded." and info.code == 503
    assert ge.delay_in_text("Quota exceeded. Please retry in 12.5s.") == 12.5


def test_gateway_prefixes_and_suffixes_are_cut_from_a_message_without_json() -> None:
    info = ge.readable(error_info(json.loads(LITELLM_PARAM)))
    assert info.message.startswith("Setting `response_format` is not supported by gemini")
    assert "LiteLLM: model group" not in info.message


def test_retry_hints_from_headers_prefixed_by_litellm_or_not() -> None:
    assert ge.retry_after_seconds({"llm_provider-retry-after": "7"}) == 7
    assert ge.retry_after_seconds({"Retry-After": "3"}) == 3
    assert ge.retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert ge.retry_after_seconds({"x-litellm-version": "1.108.7"}) is None


def test_a_parameter_refusal_names_the_field_and_is_no_request_for_json() -> None:
    message = ge.readable(error_info(json.loads(LITELLM_PARAM))).message
    sent = ["model", "prompt", "n", "response_format", "size", "aspect_ratio", "imageConfig"]
    assert ge.refused_params(message, sent) == ["response_format"]
    # The old check matched the "form" inside "response_format" and resent the edit as JSON.
    assert not ge.wants_json_body(message, sent)
    assert ge.wants_json_body("Request body must be JSON", sent)
    assert ge.wants_json_body("could not parse multipart form", sent)
    assert ge.refused_params("Unrecognized request argument supplied: imageConfig", sent) == ["imageConfig"]
    assert ge.refused_params("Invalid size '2k'", sent) == []


# --- the same rules against the plain relay double (no gateway needed) ------------------------

import pytest  # noqa: E402

from bot.relay.client import RelayClient  # noqa: E402
from bot.relay.types import GenerationRequest, RelayConfig, RelayTimeout  # noqa: E402
from tests.doubles.relay_double import Behaviour, RelayDouble  # noqa: E402

KEY = "sk-gateway-errors-test-key-000"


async def test_a_408_is_the_gateways_own_limit_tried_once_more_then_left_to_failover(double: RelayDouble) -> None:
    double.default = Behaviour("error", status=408, body="openai", message="litellm.Timeout: Connection timed out after 600.0 seconds.")
    relay = RelayConfig(base_url=double.url, dialect="openai-chat", auth="bearer", api_key=KEY)
    async with RelayClient(max_attempts=4, backoff_base=0.01) as client:
        with pytest.raises(RelayTimeout) as caught:
            await client.generate(relay, GenerationRequest(prompt="x", model="gemini-3-pro-image-preview"))
    assert caught.value.key == "error.gateway_timeout" and caught.value.retryable
    assert caught.value.relay_message == "Connection timed out after 600.0 seconds."
    assert len(double.requests) == 2


async def test_images_answers_with_drafts_first_give_the_last_picture(double: RelayDouble) -> None:
    from tests.doubles._images import picture

    draft, final = picture(40, 40), picture(80, 60)
    body = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(p.data).decode()} for p in (draft, final)]})
    double.enqueue(Behaviour("raw", status=200, body=body))
    relay = RelayConfig(base_url=double.url, dialect="openai-images", auth="bearer", api_key=KEY)
    async with RelayClient(max_attempts=1) as client:
        result = await client.generate(relay, GenerationRequest(prompt="x", model="gemini-3-pro-image-preview"))
    assert result.image == final.data and (result.width, result.height) == (80, 60)
