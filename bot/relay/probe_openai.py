"""OpenAI Images or OpenAI Chat, for a relay whose only model list is ``GET /v1/models``."""

from __future__ import annotations

from collections.abc import Sequence

from .model_names import map_models
from .probe_run import CHEAPEST_FIRST, OPENAI_AUTH, OPENAI_DIALECTS, ProbeRun, call_kind, tiny_generation
from .types import Dialect, RelayError


# Images vs Chat, when only GET /v1/models answers. The rule, strongest evidence first:
# 1. Per-size names (nano-banana-pro-2k / -4k) or the nano-banana* family -> OpenAI Images.
#    Relays name per-size models for the Images route, which takes a size (the relays that
#    publish such names list them under /v1/images/generations), and Chat has no size
#    control for a per-size name to stand in for.
# 2. A pasted endpoint URL (/v1/images/... or /v1/chat/completions) -> that dialect: the
#    admin copied it from the relay's docs.
# 3. Which routes exist: an empty POST (no prompt, nothing to generate or bill) to
#    /v1/images/generations and /v1/chat/completions. 404/405 means the route is absent;
#    a validation error (400/422) that it exists. Only Chat there -> Chat; only Images ->
#    Images; neither -> nothing useful. Both -> still ambiguous (new-api style gateways serve
#    both routes for every model): the optional tiny generation on Images decides, else the
#    admin chooses (Images first: it takes sizes and ratios).
async def openai_dialect(run: ProbeRun, names: Sequence[str], hint: Dialect | None) -> tuple[Dialect | None, tuple[Dialect, ...]]:
    models = map_models(names)
    lowered = [n.lower().rsplit("/", 1)[-1] for n in names]
    if models.sized or any(n.startswith("nano-banana") for n in lowered):
        shown = ", ".join(n for n in names if n.lower().rsplit("/", 1)[-1].startswith("nano-banana"))[:200]
        run.decide(
            "dialect",
            key="probe.why.size_names",
            detail=f"the model list has per-size / nano-banana names ({shown}), which relays serve on /v1/images",
            models=shown,
        )
        return "openai-images", ()
    if hint in OPENAI_DIALECTS:
        return hint, ()
    if hint == "gemini":
        run.decide("dialect", key="probe.why.hint_ignored", detail="the pasted Gemini endpoint gave no Gemini model list")
    model = next((m for m in CHEAPEST_FIRST if m in models.served), None)
    wire = models.aliases.get(model, model) if model else "gemini-2.5-flash-image"
    images_cfg = run.config("openai-images", OPENAI_AUTH)
    chat_cfg = run.config("openai-chat", OPENAI_AUTH)
    _, images_exc = await run.call(
        "POST /v1/images/generations (empty, no prompt)", images_cfg, "/images/generations", body={"model": wire}
    )
    _, chat_exc = await run.call("POST /v1/chat/completions (empty, no messages)", chat_cfg, "/chat/completions", body={"model": wire})
    images_there = route_there(images_exc)
    chat_there = route_there(chat_exc)
    if chat_there and images_there is False:
        run.decide("dialect", key="probe.why.only_chat_route", detail="POST /v1/images/generations is not there; /v1/chat/completions is")
        return "openai-chat", ()
    if images_there and chat_there is False:
        run.decide("dialect", key="probe.why.only_images_route", detail="POST /v1/chat/completions is not there; /v1/images/generations is")
        return "openai-images", ()
    if images_there is False and chat_there is False:
        run.decide("dialect", key="probe.why.no_routes", detail="neither OpenAI image route is there")
        return None, ()
    run.decide(
        "dialect", key="probe.why.both_routes", detail="both OpenAI routes are there and the model names do not tell which one draws"
    )
    return None, OPENAI_DIALECTS  # Images first: it takes sizes and ratios


def route_there(exc: RelayError | None) -> bool | None:
    """True: the route exists (it validated the empty body); False: absent; None: unclear."""
    if exc is None:
        return True  # it even answered 2xx to an empty body
    kind = call_kind(exc)
    if kind == "absent":
        return False
    status = getattr(exc, "status", None)
    if status in (400, 422) or getattr(exc, "key", "").startswith("error.no_image"):
        return True
    return None


async def generation_decides(run: ProbeRun, dialect: Dialect, names: Sequence[str], timeout: float) -> Dialect | None:
    models = map_models(names)
    if not models.served:
        return None
    ok = await tiny_generation(run, dialect, OPENAI_AUTH, models, timeout)
    if ok:
        run.decide("dialect", key="probe.why.generation_dialect", detail=f"a tiny {dialect} generation returned a picture", dialect=dialect)
        return dialect
    return None
