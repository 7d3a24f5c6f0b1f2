"""What the relay probe answers: the verdict, and the evidence and reasons behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .model_names import ModelMap
from .types import AuthStyle, Dialect, InvalidRequest, RelayConfig

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
            model_aliases=self.models.wire_names(),
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
