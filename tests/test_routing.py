"""The pure parts of routing: what each relay format cannot honour, which options stop every
relay of a server, and which relay model name a size asks for."""

from __future__ import annotations

import pytest

from bot.relay.capabilities import reference_note, unhonoured
from bot.relay.model_names import map_models
from bot.relay.types import GenerationRequest, InputImage, RelayConfig
from bot.studio import unroutable

PRO = "gemini-3-pro-image-preview"
PIC = InputImage(b"x", "image/png")


def relay(dialect: str, **aliases: str) -> RelayConfig:
    return RelayConfig(base_url="https://relay.example", dialect=dialect, model_aliases=aliases)  # type: ignore[arg-type]


def test_each_format_names_what_it_would_drop() -> None:
    asked = GenerationRequest(prompt="p", model=PRO, aspect_ratio="16:9", size="2K", grounding=True, images=[PIC] * 7)
    assert unhonoured("gemini", asked) == []
    assert unhonoured("openai-images", asked) == ["grounding", "images"]
    assert unhonoured("openai-chat", asked) == ["aspect_ratio", "size", "grounding"]
    assert unhonoured("openai-images", GenerationRequest(prompt="p", model=PRO, images=[PIC] * 6)) == []


def test_a_request_is_unroutable_only_when_no_relay_can_take_it() -> None:
    ratio = GenerationRequest(prompt="p", model=PRO, aspect_ratio="16:9")
    assert unroutable([relay("openai-chat"), relay("gemini")], ratio) == []
    assert unroutable([relay("openai-chat")], ratio) == ["aspect_ratio"]
    both = GenerationRequest(prompt="p", model=PRO, aspect_ratio="16:9", grounding=True)
    # What no relay can honour is named, not what only one of them lacks.
    assert unroutable([relay("openai-chat"), relay("openai-images")], both) == ["grounding"]
    assert unroutable([], both) == []  # no relay at all is said elsewhere (admin.relay.none)


def test_per_size_names_are_kept_and_chosen_by_size() -> None:
    names = map_models(["nano-banana-pro", "nano-banana-pro-2k", "nano-banana-pro-4k"]).wire_names()
    assert names == {PRO: "nano-banana-pro", f"{PRO}@2K": "nano-banana-pro-2k", f"{PRO}@4K": "nano-banana-pro-4k"}
    config = relay("openai-images", **names)
    assert [config.model_name(PRO, s) for s in (None, "1K", "2K", "4K")] == [
        "nano-banana-pro",
        "nano-banana-pro",
        "nano-banana-pro-2k",
        "nano-banana-pro-4k",
    ]
    assert relay("gemini").model_name(PRO, "4K") == PRO


def test_the_guidance_note_appears_past_the_people_the_model_keeps() -> None:
    assert reference_note(PRO, 5) is None
    note = reference_note(PRO, 6)
    assert note is not None and note.params == {"model": "Nano Banana Pro (3 Pro)", "people": 5, "objects": 6, "count": 6}
    assert reference_note("gemini-2.5-flash-image", 3) is None  # no such guidance for 2.5 Flash


def test_the_relay_form_reads_back_the_per_size_names_it_shows() -> None:
    from bot.guild_config import ConfigError
    from cogs.admin.relay_form import parse_aliases

    shown = f"{PRO}=nano-banana-pro\n{PRO}@2K=nano-banana-pro-2k\nnano-banana-pro@4k=nano-banana-pro-4k"
    assert parse_aliases(shown) == {PRO: "nano-banana-pro", f"{PRO}@2K": "nano-banana-pro-2k", f"{PRO}@4K": "nano-banana-pro-4k"}
    for bad in (f"{PRO}@huge=x", "no-such-model@2K=x"):
        with pytest.raises(ConfigError):
            parse_aliases(bad)
