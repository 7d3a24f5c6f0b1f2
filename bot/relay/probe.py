"""Working out how to talk to a relay from its URL and key alone.

``/admin relay add`` with only a URL and a key calls :func:`probe_relay`; it answers a
:class:`ProbeResult`: the dialect, the auth style and the model names it found, each with the
evidence it rests on, or a clear "could not work it out; choose the format" (``found`` False).
Nothing is stored here; :func:`store_probed` stores a found result and refuses the rest.

Cheap calls only, each tried once, bounded in time (``step_timeout``) and size
(``client.SMALL_ANSWER_BYTES``), through the same :class:`RelayClient` as generation (its HTTP
client, transport and URL guard; ``trusted=False`` makes every request pass the guard):

1. ``GET {base}/v1beta/models`` with each Gemini auth style in turn — ``Authorization:
   Bearer`` (most relays), ``x-goog-api-key`` (Google's own), ``?key=`` (last: a key in a URL
   ends up in access logs). The first style the list answers to is the relay's.
2. If no Gemini list answers: ``GET {base}/v1/models`` with Bearer (new-api/one-api style
   gateways answer ``{"data": [{"id"}]}``).
3. OpenAI Images or OpenAI Chat? See :func:`_openai_dialect` for the rule. Where names and the
   pasted URL do not settle it, an *empty* POST to each route (no prompt, so nothing can be
   generated or billed) shows which routes exist: a relay without the route answers 404/405,
   one with it a 400/422 validation error.
4. If the model list also answers *without* a key, the auth style is unconfirmed (noted).
5. Only with ``allow_generation=True``, and only when a question is still open (the auth
   style unconfirmed, or Images vs Chat undecided), one tiny generation settles it.

Gemini native wins when both kinds of list answer: it is the only dialect with sizes,
ratios, multi-turn editing and grounding.

Key safety: the key is registered with :mod:`redact` before the first call, and every piece of
evidence is redacted again before it is kept; a relay echoing the key in an error cannot put it
into a result, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..settings import SettingsError, relay_base_url
from .client import RelayClient
from .model_names import ModelMap, listed_names, map_models
from .probe_result import Decision, Evidence, Outcome, ProbeResult
from .redact import redact, register_secret
from .types import AUTH_STYLES, DIALECTS, AuthStyle, Dialect, GenerationRequest, RelayConfig, RelayError, default_auth

log = logging.getLogger("bot.relay.probe")

STEP_TIMEOUT_S = 15.0
GENERATION_TIMEOUT_S = 240.0
# Every auth style, ``?key=`` last: a key in a URL ends up in access logs.
GEMINI_AUTH_ORDER: tuple[AuthStyle, ...] = tuple(sorted(AUTH_STYLES, key=lambda style: style == "query"))
OPENAI_DIALECTS: tuple[Dialect, ...] = tuple(d for d in DIALECTS if d != "gemini")
OPENAI_AUTH: AuthStyle = default_auth("openai-chat")
TINY_PROMPT = "A plain red square on a white background."
# Cheapest first: the tiny generation uses the first of these the relay lists.
CHEAPEST_FIRST = ("gemini-2.5-flash-image", "gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview")


# --- the probe ------------------------------------------------------------------------------


@dataclass
class _Run:
    client: RelayClient
    base_url: str
    api_key: str
    trusted: bool
    step_timeout: float
    started: float = field(default_factory=time.monotonic)
    evidence: list[Evidence] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def config(self, dialect: Dialect, auth: AuthStyle, *, keyless: bool = False) -> RelayConfig:
        return RelayConfig(
            base_url=self.base_url,
            dialect=dialect,
            auth=auth,
            api_key="" if keyless else self.api_key,
            name="probe",
            trusted=self.trusted,
        )

    def result(self, outcome: Outcome, **kw: Any) -> ProbeResult:
        """The verdict, with every decision and piece of evidence so far (logged key-free)."""
        result = ProbeResult(
            outcome,
            base_url=self.base_url,
            decisions=tuple(self.decisions),
            evidence=tuple(self.evidence),
            elapsed_s=round(time.monotonic() - self.started, 3),
            **kw,
        )
        log.info("relay probe: %s", redact(result.summary(), [self.api_key]))
        return result

    def clean(self, text: object) -> str:
        return redact(text, [self.api_key])[:300]

    def decide(self, topic: Literal["dialect", "auth", "models"], *, key: str, detail: str, **params: str) -> None:
        self.decisions.append(Decision(topic, key, self.clean(detail), {k: self.clean(v) for k, v in params.items()}))

    async def call(self, step: str, relay: RelayConfig, path: str, *, body: Any = None) -> tuple[Any, RelayError | None]:
        """(answer, None) on success, (None, error) on failure; evidence recorded either way."""
        try:
            value = await self.client.call_json(relay, path, body=body, timeout=self.step_timeout)
        except RelayError as exc:
            status = getattr(exc, "status", None)
            self.evidence.append(Evidence(step, status, self.clean(exc), ok=False))
            return None, exc
        names = listed_names(value)
        detail = f"{len(names)} models listed" if names is not None else "answered"
        self.evidence.append(Evidence(step, 200, detail, ok=True))
        return value, None


def _kind(exc: RelayError | None) -> str:
    """auth | refused | network | absent | other"""
    if exc is None:
        return "ok"
    key = getattr(exc, "key", "")
    if key == "error.url_refused":
        return "refused"
    if key == "error.auth":
        return "auth"
    if key in ("error.network", "error.timeout"):
        return "network"
    status = getattr(exc, "status", None)
    if status in (404, 405, 501):
        return "absent"
    return "other"


def _pasted_hint(url: str) -> tuple[str, Dialect | None, str | None]:
    """The base URL, the dialect a pasted endpoint names, and the model it names (if any).

    Uses :func:`settings.relay_base_url` (the operator relay's own normalisation): whatever it
    cut off the end is the endpoint that was pasted."""
    parts = urlsplit(url.strip())
    for _, value in parse_qsl(parts.query, keep_blank_values=True):
        register_secret(value)  # a pasted "?key=..." never reaches a result or a log
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
    base = relay_base_url(clean)
    cut = clean[len(base) :]
    if m := re.search(r"/models/([^/:]+):(?:stream)?[gG]enerateContent$", cut):
        return base, "gemini", m.group(1)
    if "/images/" in cut:
        return base, "openai-images", None
    if cut.endswith("/chat/completions"):
        return base, "openai-chat", None
    return base, None, None


async def probe_relay(
    client: RelayClient,
    url: str,
    api_key: str,
    *,
    trusted: bool = False,
    allow_generation: bool = False,
    step_timeout: float = STEP_TIMEOUT_S,
    generation_timeout: float = GENERATION_TIMEOUT_S,
) -> ProbeResult:
    """Work out ``url``'s dialect, auth style and model names (see the module docstring).

    ``trusted`` is True only for the operator's own relay (no URL guard); a server admin's
    relay is probed with ``trusted=False``. Never raises for anything the relay does: every
    failure is an outcome with its evidence."""
    key = api_key.strip()
    register_secret(key)
    try:
        base, hint, hint_model = _pasted_hint(url)
    except (SettingsError, ValueError):
        base, hint, hint_model = "", None, None
    if not re.match(r"^https?://[^/?#]+", base):
        return ProbeResult("bad_url", base_url="")
    run = _Run(client, base, key, trusted, step_timeout)
    if hint:
        run.decide(
            "dialect",
            key="probe.why.pasted_endpoint",
            detail=f"the pasted URL was a {hint} endpoint" + (f" (model {hint_model})" if hint_model else ""),
            dialect=hint,
        )
    gemini = await _gemini_lists(run, allow_generation, generation_timeout, hint_model)
    if isinstance(gemini, ProbeResult):
        return gemini
    return await _openai_list(run, gemini, hint, allow_generation, generation_timeout)


async def _gemini_lists(run: _Run, allow_generation: bool, generation_timeout: float, hint_model: str | None) -> ProbeResult | list[str]:
    """Step 1: the Gemini model list with each auth style in turn. The verdict, or how each
    style failed (see :func:`_kind`)."""
    kinds: list[str] = []
    for style in GEMINI_AUTH_ORDER:
        value, exc = await run.call(f"GET /v1beta/models ({style})", run.config("gemini", style), "/models?pageSize=1000")
        kind = _kind(exc)
        if kind == "refused":
            return run.result("url_refused")
        if kind == "network" and not kinds:
            return run.result("unreachable")
        names = listed_names(value) if exc is None else None
        if names is not None:
            run.decide("dialect", key="probe.why.gemini_list", detail=f"GET /v1beta/models answered with {style} auth", auth=style)
            return await _finish(run, "gemini", style, names, allow_generation, generation_timeout, hint_model)
        kinds.append(kind if exc is not None else "other")
    return kinds


async def _openai_list(run: _Run, kinds: list[str], hint: Dialect | None, allow_generation: bool, generation_timeout: float) -> ProbeResult:
    """Steps 2, 3 and 5: the OpenAI-style model list, then Images or Chat."""
    value, exc = await run.call(f"GET /v1/models ({OPENAI_AUTH})", run.config("openai-chat", OPENAI_AUTH), "/models")
    kind = _kind(exc)
    kinds.append(kind)
    if kind == "refused":
        return run.result("url_refused")
    names = listed_names(value) if exc is None else None
    if names is None:
        return _no_model_list(run, kinds, hint)
    dialect, candidates = await _openai_dialect(run, names, hint)
    if dialect is None and allow_generation and candidates:
        dialect = await _generation_decides(run, candidates[0], names, generation_timeout)
        if dialect is not None:
            return await _finish(run, dialect, OPENAI_AUTH, names, False, generation_timeout, None, generated=True)
    if dialect is None:
        return run.result("ambiguous", auth=OPENAI_AUTH, models=map_models(names), candidates=candidates)
    return await _finish(run, dialect, OPENAI_AUTH, names, allow_generation, generation_timeout, None)


def _no_model_list(run: _Run, kinds: list[str], hint: Dialect | None) -> ProbeResult:
    """No model list answered: why, from how each call failed."""
    if all(k == "auth" for k in kinds):
        run.decide("auth", key="probe.why.key_refused", detail="every model list refused the key")
        return run.result("key_refused")
    if all(k == "network" for k in kinds):
        return run.result("unreachable")
    if "auth" in kinds:
        run.decide("auth", key="probe.why.key_refused_somewhere", detail="some model lists refused the key; the others are not there")
        return run.result("key_refused")
    run.decide("dialect", key="probe.why.no_model_list", detail="neither GET /v1beta/models nor GET /v1/models gave a model list")
    return run.result("nothing_useful", candidates=(hint,) if hint else ())


async def _finish(
    run: _Run,
    dialect: Dialect,
    auth: AuthStyle,
    names: Sequence[str],
    allow_generation: bool,
    generation_timeout: float,
    hint_model: str | None,
    *,
    generated: bool = False,
) -> ProbeResult:
    models = map_models(list(names) + ([hint_model] if hint_model else []))
    if models.served:
        shown = ", ".join(models.aliases.get(m, m) for m in models.served)
        run.decide("models", key="probe.why.listed", detail=f"listed: {shown}", models=shown)
    else:
        run.decide("models", key="probe.why.none_listed", detail="the list names none of the Nano Banana models; set the names by hand")
    confirmed = generated
    if not confirmed:
        # Does the list answer without a key too? Then it proves nothing about the auth style.
        path = "/models?pageSize=1000" if dialect == "gemini" else "/models"
        step = f"GET {'/v1beta' if dialect == 'gemini' else '/v1'}/models (no key)"
        value, exc = await run.call(step, run.config(dialect, auth, keyless=True), path)
        if exc is None and listed_names(value) is not None:
            run.decide("auth", key="probe.why.unconfirmed", detail=f"the model list answers without a key, so {auth} is a guess", auth=auth)
        elif _kind(exc) == "auth":
            confirmed = True
            run.decide(
                "auth",
                key="probe.why.listing",
                detail=f"the model list answered with {auth} auth and refuses requests without a key",
                auth=auth,
            )
        else:  # a network failure or an odd answer: no proof either way
            run.decide(
                "auth",
                key="probe.why.unchecked",
                detail=f"could not check whether the model list needs a key, so {auth} is unconfirmed",
                auth=auth,
            )
    if not confirmed and allow_generation and models.served:
        ok = await _tiny_generation(run, dialect, auth, models, generation_timeout)
        confirmed = generated = ok
    return run.result("found", dialect=dialect, auth=auth, models=models, auth_confirmed=confirmed, generated=generated)


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
async def _openai_dialect(run: _Run, names: Sequence[str], hint: Dialect | None) -> tuple[Dialect | None, tuple[Dialect, ...]]:
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
    images_there = _route_there(images_exc)
    chat_there = _route_there(chat_exc)
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


def _route_there(exc: RelayError | None) -> bool | None:
    """True: the route exists (it validated the empty body); False: absent; None: unclear."""
    if exc is None:
        return True  # it even answered 2xx to an empty body
    kind = _kind(exc)
    if kind == "absent":
        return False
    status = getattr(exc, "status", None)
    if status in (400, 422) or getattr(exc, "key", "").startswith("error.no_image"):
        return True
    return None


async def _generation_decides(run: _Run, dialect: Dialect, names: Sequence[str], timeout: float) -> Dialect | None:
    models = map_models(names)
    if not models.served:
        return None
    ok = await _tiny_generation(run, dialect, OPENAI_AUTH, models, timeout)
    if ok:
        run.decide("dialect", key="probe.why.generation_dialect", detail=f"a tiny {dialect} generation returned a picture", dialect=dialect)
        return dialect
    return None


async def _tiny_generation(run: _Run, dialect: Dialect, auth: AuthStyle, models: ModelMap, timeout: float) -> bool:
    """The one optional generation: the cheapest listed model, default size, one attempt."""
    model = next((m for m in CHEAPEST_FIRST if m in models.served), models.served[0])
    relay = replace(run.config(dialect, auth), model_aliases=dict(models.aliases))
    step = f"tiny {dialect} generation ({models.aliases.get(model, model)})"
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            result = await run.client.limited(max_attempts=1).generate(relay, GenerationRequest(prompt=TINY_PROMPT, model=model))
    except TimeoutError:
        run.evidence.append(Evidence(step, None, f"no answer within {timeout:.0f} s", ok=False))
        return False
    except RelayError as exc:
        run.evidence.append(Evidence(step, getattr(exc, "status", None), run.clean(exc), ok=False))
        return False
    run.evidence.append(Evidence(step, 200, f"a {result.width}x{result.height} picture in {time.monotonic() - started:.1f} s", ok=True))
    run.decide("auth", key="probe.why.generation_auth", detail=f"a generation with {auth} auth returned a picture", auth=auth)
    return True


async def store_probed(store: Any, guild_id: int, name: str, result: ProbeResult, api_key: str) -> Any:
    """Save a found relay through ``RelayStore.add`` (its URL guard and checks included);
    a result that found nothing is refused (ConfigError ``probe.outcome.not_found``) and
    nothing is stored."""
    from ..guild_config import ConfigError

    if not result.found or result.dialect is None or result.auth is None:
        raise ConfigError("the probe found no format to store", key="probe.outcome.not_found")
    return await store.add(
        guild_id,
        name=name,
        base_url=result.base_url,
        api_key=api_key,
        dialect=result.dialect,
        auth=result.auth,
        model_aliases=dict(result.models.aliases),
    )


__all__ = [
    "Decision",
    "Evidence",
    "ModelMap",
    "ProbeResult",
    "listed_names",
    "map_models",
    "probe_relay",
    "store_probed",
]
