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
ratios, multi-turn editing and grounding (the relays' own docs recommend it).

Key safety: the key is registered with :mod:`redact` before the first call, and every piece of
evidence is redacted again before it is kept; a relay echoing the key in an error cannot put it
into a result, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..settings import SettingsError, relay_base_url
from .catalogue import MODELS, normalize_size, resolve_model
from .client import RelayClient
from .redact import redact, register_secret
from .types import AuthStyle, Dialect, GenerationRequest, InvalidRequest, RelayConfig, RelayError

log = logging.getLogger("bot.relay.probe")

STEP_TIMEOUT_S = 15.0
GENERATION_TIMEOUT_S = 240.0
GEMINI_AUTH_ORDER: tuple[AuthStyle, ...] = ("bearer", "x-goog-api-key", "query")
TINY_PROMPT = "A plain red square on a white background."
# Cheapest first: the tiny generation uses the first of these the relay lists.
CHEAPEST_FIRST = ("gemini-2.5-flash-image", "gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview")

Outcome = Literal["found", "ambiguous", "nothing_useful", "key_refused", "unreachable", "url_refused", "bad_url"]
OUTCOME_KEYS: dict[str, str] = {
    "found": "probe.outcome.found",
    "ambiguous": "probe.outcome.ambiguous",
    "nothing_useful": "probe.outcome.nothing_useful",
    "key_refused": "probe.outcome.key_refused",
    "unreachable": "probe.outcome.unreachable",
    "url_refused": "probe.outcome.url_refused",
    "bad_url": "probe.outcome.bad_url",
}


@dataclass(frozen=True)
class Evidence:
    """One call the probe made and what came back (key-free)."""

    step: str  # e.g. "GET /v1beta/models (bearer)"
    status: int | None  # HTTP status, None for a network failure or refusal before sending
    detail: str  # e.g. "12 models listed", "HTTP 404: not found"
    ok: bool


@dataclass(frozen=True)
class Decision:
    """Why the probe chose something: ``topic`` dialect/auth/models; ``key``/``params`` a
    translated line (``t(d.key, locale, **d.params)``); ``detail`` English for logs."""

    topic: Literal["dialect", "auth", "models"]
    key: str
    detail: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.key.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelMap:
    """What the relay calls each catalogue model.

    ``aliases``: catalogue id -> the relay's name, only where they differ (RelayConfig
    ``model_aliases``). ``served``: catalogue ids the relay lists. ``sized``: per-size names
    (``nano-banana-pro-4k``) by catalogue id and canonical size."""

    served: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    sized: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()  # listed names that are no image model we know


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    base_url: str
    dialect: Dialect | None = None
    auth: AuthStyle | None = None
    models: ModelMap = field(default_factory=ModelMap)
    auth_confirmed: bool = False
    generated: bool = False
    candidates: tuple[Dialect, ...] = ()  # when not found: the formats worth choosing from
    decisions: tuple[Decision, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    elapsed_s: float = 0.0

    @property
    def found(self) -> bool:
        return self.outcome == "found"

    @property
    def message_key(self) -> str:
        """The translation key of the one-line verdict; fields: dialect, auth, candidates."""
        return OUTCOME_KEYS[self.outcome]

    def relay_config(self, api_key: str, *, name: str = "default", trusted: bool = False) -> RelayConfig:
        """The RelayConfig the probe found; InvalidRequest when it found none."""
        if not self.found or self.dialect is None or self.auth is None:
            raise InvalidRequest("the probe could not work out the relay's format; choose it by hand", key="probe.outcome.not_found")
        return RelayConfig(
            base_url=self.base_url,
            dialect=self.dialect,
            auth=self.auth,
            api_key=api_key,
            name=name,
            model_aliases=dict(self.models.aliases),
            trusted=trusted,
        )

    def summary(self) -> str:
        """English, key-free, for logs and the CLI."""
        if self.found:
            head = f"{self.base_url}: {self.dialect}, auth {self.auth}" + ("" if self.auth_confirmed else " (unconfirmed)")
            models = ", ".join(f"{m}" + (f" as {self.models.aliases[m]}" if m in self.models.aliases else "") for m in self.models.served)
            head += f"; models: {models or 'none of ours listed'}"
        else:
            head = f"{self.base_url or '(no URL)'}: could not work it out ({self.outcome}); choose the format"
            if self.candidates:
                head += f" (likely one of: {', '.join(self.candidates)})"
        reasons = "; ".join(d.detail for d in self.decisions)
        return head + (f". Why: {reasons}" if reasons else "")


# --- model names ----------------------------------------------------------------------------

_SIZE_SUFFIX = re.compile(r"^(?P<base>.+?)[-_](?P<size>512(?:px)?|[124]k)$", re.IGNORECASE)


def _catalogue_id(name: str) -> str | None:
    try:
        return resolve_model(name).id
    except InvalidRequest:
        return None


def map_models(names: Iterable[str]) -> ModelMap:
    """The relay's model names mapped to the catalogue (``models/`` and vendor prefixes such
    as ``google/`` dropped; ``-1k``/``-2k``/``-4k``/``-512`` suffixes read as sizes)."""
    plain: dict[str, list[str]] = {}
    sized: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    for raw in names:
        name = raw.strip()
        short = name[len("models/") :] if name.startswith("models/") else name
        short = short.rsplit("/", 1)[-1]
        if not short:
            continue
        ours = _catalogue_id(short)
        if ours is not None:
            plain.setdefault(ours, []).append(short)
            continue
        m = _SIZE_SUFFIX.match(short)
        ours = _catalogue_id(m.group("base")) if m else None
        size = normalize_size(m.group("size")) if m else None
        if ours is not None and size is not None:
            sized.setdefault(ours, {})[size] = short
        elif "image" in short.lower() or "banana" in short.lower():
            unknown.append(short)
    aliases: dict[str, str] = {}
    for ours, found in plain.items():
        spec = MODELS[ours]
        if any(n.lower() == ours for n in found):
            continue  # the relay takes our own id: no alias needed
        # The catalogue's alias order (e.g. "nano-banana-pro" before any other spelling).
        ranked = sorted(found, key=lambda n: spec.aliases.index(n.lower()) if n.lower() in spec.aliases else len(spec.aliases))
        aliases[ours] = ranked[0]
    for ours, by_size in sized.items():
        if ours not in plain:
            # Only per-size names: send the smallest; the size option still goes with it.
            smallest = min(by_size, key=lambda s: ("512", "1K", "2K", "4K").index(s))
            aliases[ours] = by_size[smallest]
    served = tuple(m for m in MODELS if m in plain or m in sized)
    return ModelMap(served=served, aliases=aliases, sized={k: dict(v) for k, v in sized.items()}, unknown=tuple(unknown))


def listed_names(value: Any) -> list[str] | None:
    """Model names from a Gemini (``models[].name``) or OpenAI (``data[].id``) list; None if
    ``value`` is neither shape."""
    if not isinstance(value, dict):
        return None
    for key, field_name in (("models", "name"), ("data", "id")):
        items = value.get(key)
        if isinstance(items, list):
            names = [item.get(field_name) or item.get("id") or item.get("name") for item in items if isinstance(item, dict)]
            return [n for n in names if isinstance(n, str) and n.strip()]
    return None


# --- the probe ------------------------------------------------------------------------------


@dataclass
class _Run:
    client: RelayClient
    base_url: str
    api_key: str
    trusted: bool
    step_timeout: float
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
    started = time.monotonic()
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

    def done(outcome: Outcome, **kw: Any) -> ProbeResult:
        result = ProbeResult(
            outcome,
            base_url=base,
            decisions=tuple(run.decisions),
            evidence=tuple(run.evidence),
            elapsed_s=round(time.monotonic() - started, 3),
            **kw,
        )
        log.info("relay probe: %s", redact(result.summary(), [key]))
        return result

    # 1. Gemini native, each auth style.
    kinds: list[str] = []
    for style in GEMINI_AUTH_ORDER:
        value, exc = await run.call(f"GET /v1beta/models ({style})", run.config("gemini", style), "/models?pageSize=1000")
        kind = _kind(exc)
        if kind == "refused":
            return done("url_refused")
        if kind == "network" and not kinds:
            return done("unreachable")
        names = listed_names(value) if exc is None else None
        if names is not None:
            run.decide("dialect", key="probe.why.gemini_list", detail=f"GET /v1beta/models answered with {style} auth", auth=style)
            return await _finish(run, done, "gemini", style, names, allow_generation, generation_timeout, hint_model)
        kinds.append(kind if exc is not None else "other")

    # 2. OpenAI-style model list.
    value, exc = await run.call("GET /v1/models (bearer)", run.config("openai-chat", "bearer"), "/models")
    kind = _kind(exc)
    kinds.append(kind)
    if kind == "refused":
        return done("url_refused")
    names = listed_names(value) if exc is None else None
    if names is None:
        if all(k == "auth" for k in kinds):
            run.decide("auth", key="probe.why.key_refused", detail="every model list refused the key")
            return done("key_refused")
        if all(k == "network" for k in kinds):
            return done("unreachable")
        if "auth" in kinds:
            run.decide("auth", key="probe.why.key_refused_somewhere", detail="some model lists refused the key; the others are not there")
            return done("key_refused")
        run.decide("dialect", key="probe.why.no_model_list", detail="neither GET /v1beta/models nor GET /v1/models gave a model list")
        return done("nothing_useful", candidates=(hint,) if hint else ())

    dialect, candidates = await _openai_dialect(run, names, hint)
    if dialect is None and allow_generation and candidates:
        dialect = await _generation_decides(run, candidates[0], names, generation_timeout)
        if dialect is not None:
            return await _finish(run, done, dialect, "bearer", names, False, generation_timeout, None, generated=True)
    if dialect is None:
        return done("ambiguous", auth="bearer", models=map_models(names), candidates=candidates)
    return await _finish(run, done, dialect, "bearer", names, allow_generation, generation_timeout, None)


async def _finish(
    run: _Run,
    done: Any,
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
    return done("found", dialect=dialect, auth=auth, models=models, auth_confirmed=confirmed, generated=generated)


# Images vs Chat, when only GET /v1/models answers. The rule, strongest evidence first:
# 1. Per-size names (nano-banana-pro-2k / -4k) or the nano-banana* family -> OpenAI Images.
#    Relays name per-size models for the Images route, which takes a size; the relay that
#    documents these names (api.gpt.ge, seed 002) documents them on /v1/images/generations,
#    and Chat has no size control for a per-size name to stand in for.
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
    if hint in ("openai-images", "openai-chat"):
        return hint, ()
    if hint == "gemini":
        run.decide("dialect", key="probe.why.hint_ignored", detail="the pasted Gemini endpoint gave no Gemini model list")
    model = next((m for m in CHEAPEST_FIRST if m in models.served), None)
    wire = models.aliases.get(model, model) if model else "gemini-2.5-flash-image"
    images_cfg = run.config("openai-images", "bearer")
    chat_cfg = run.config("openai-chat", "bearer")
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
    return None, ("openai-images", "openai-chat")


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
    ok = await _tiny_generation(run, dialect, "bearer", models, timeout)
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
