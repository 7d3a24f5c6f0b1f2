"""Working out how to talk to a relay from its URL and key alone.

``/admin relay add`` with only a URL and a key calls :func:`probe_relay`; it answers a
:class:`ProbeResult`: the dialect, the auth style and the model names it found, each with the
evidence it rests on, or a clear "could not work it out; choose the format" (``found`` False).
Nothing is stored here; ``bot.relays.store.RelayStore.add_probed`` stores a found result and
refuses the rest.

Cheap calls only, each tried once, bounded in time (``step_timeout``) and size
(``client.SMALL_ANSWER_BYTES``), through the same :class:`RelayClient` as generation (its HTTP
client, transport and URL guard; ``trusted=False`` makes every request pass the guard):

1. ``GET {base}/v1beta/models`` with each Gemini auth style in turn — ``Authorization:
   Bearer`` (most relays), ``x-goog-api-key`` (Google's own), ``?key=`` (last: a key in a URL
   ends up in access logs). The first style the list answers to is the relay's.
2. If no Gemini list answers: ``GET {base}/v1/models`` with Bearer (new-api/one-api style
   gateways answer ``{"data": [{"id"}]}``).
3. OpenAI Images or OpenAI Chat? See :func:`.probe_openai.openai_dialect`. Where names and the
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

import logging
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..settings import SettingsError, relay_base_url
from .client import RelayClient
from .model_names import ModelMap, listed_names, map_models
from .probe_openai import generation_decides, openai_dialect
from .probe_result import Decision, Evidence, ProbeResult
from .probe_run import OPENAI_AUTH, ProbeRun, call_kind, tiny_generation
from .redact import register_secret
from .types import AUTH_STYLES, AuthStyle, Dialect

log = logging.getLogger("bot.relay.probe")

STEP_TIMEOUT_S = 15.0
GENERATION_TIMEOUT_S = 240.0
# Every auth style, ``?key=`` last: a key in a URL ends up in access logs.
GEMINI_AUTH_ORDER: tuple[AuthStyle, ...] = tuple(sorted(AUTH_STYLES, key=lambda style: style == "query"))


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
    run = ProbeRun(client, base, key, trusted, step_timeout)
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


async def _gemini_lists(
    run: ProbeRun, allow_generation: bool, generation_timeout: float, hint_model: str | None
) -> ProbeResult | list[str]:
    """Step 1: the Gemini model list with each auth style in turn. The verdict, or how each
    style failed (see :func:`.probe_run.call_kind`)."""
    kinds: list[str] = []
    for style in GEMINI_AUTH_ORDER:
        value, exc = await run.call(f"GET /v1beta/models ({style})", run.config("gemini", style), "/models?pageSize=1000")
        kind = call_kind(exc)
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


async def _openai_list(
    run: ProbeRun, kinds: list[str], hint: Dialect | None, allow_generation: bool, generation_timeout: float
) -> ProbeResult:
    """Steps 2, 3 and 5: the OpenAI-style model list, then Images or Chat."""
    value, exc = await run.call(f"GET /v1/models ({OPENAI_AUTH})", run.config("openai-chat", OPENAI_AUTH), "/models")
    kind = call_kind(exc)
    kinds.append(kind)
    if kind == "refused":
        return run.result("url_refused")
    names = listed_names(value) if exc is None else None
    if names is None:
        return _no_model_list(run, kinds, hint)
    dialect, candidates = await openai_dialect(run, names, hint)
    if dialect is None and allow_generation and candidates:
        dialect = await generation_decides(run, candidates[0], names, generation_timeout)
        if dialect is not None:
            return await _finish(run, dialect, OPENAI_AUTH, names, False, generation_timeout, None, generated=True)
    if dialect is None:
        return run.result("ambiguous", auth=OPENAI_AUTH, models=map_models(names), candidates=candidates)
    return await _finish(run, dialect, OPENAI_AUTH, names, allow_generation, generation_timeout, None)


def _no_model_list(run: ProbeRun, kinds: list[str], hint: Dialect | None) -> ProbeResult:
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
    run: ProbeRun,
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
        elif call_kind(exc) == "auth":
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
        ok = await tiny_generation(run, dialect, auth, models, generation_timeout)
        confirmed = generated = ok
    return run.result("found", dialect=dialect, auth=auth, models=models, auth_confirmed=confirmed, generated=generated)


__all__ = [
    "Decision",
    "Evidence",
    "ModelMap",
    "ProbeResult",
    "listed_names",
    "map_models",
    "probe_relay",
]
