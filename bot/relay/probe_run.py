"""One probe run: the calls it makes, the evidence and reasons it collects, and its verdict.

Every call is tried once, bounded in time and size, and recorded key-free (see :mod:`.probe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .client import RelayClient
from .model_names import ModelMap, listed_names
from .probe_result import Decision, Evidence, Outcome, ProbeResult
from .redact import redact
from .types import DIALECTS, AuthStyle, Dialect, GenerationRequest, RelayConfig, RelayError, default_auth

log = logging.getLogger("bot.relay.probe")

OPENAI_DIALECTS: tuple[Dialect, ...] = tuple(d for d in DIALECTS if d != "gemini")
OPENAI_AUTH: AuthStyle = default_auth("openai-chat")
TINY_PROMPT = "A plain red square on a white background."
# Cheapest first: the tiny generation uses the first of these the relay lists.
CHEAPEST_FIRST = ("gemini-2.5-flash-image", "gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview")


@dataclass
class ProbeRun:
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


def call_kind(exc: RelayError | None) -> str:
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


async def tiny_generation(run: ProbeRun, dialect: Dialect, auth: AuthStyle, models: ModelMap, timeout: float) -> bool:
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
