"""A server's safety rules together: what ``/admin safety`` stores in the server's settings and
what the request path asks before anything is queued.

- ``blocklist``: the admin's entries as typed (compiled once per policy, see
  bot/safety/blocklist.py for what an entry may be);
- ``nsfw_models``: models members may use only in age-restricted (NSFW) channels;
- ``spoiler``: results are posted as spoilers (hidden until clicked);
- ``gemini``: the ``safetySettings`` thresholds sent on Gemini relays.

Defaults, for a community out of the box: no blocklist entries (an empty list refuses
nothing a member would not expect), no model confined to NSFW channels, no spoilers, and
Gemini thresholds stricter than Google's own (bot/safety/gemini.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config_error import ConfigError
from .blocklist import MAX_RULES, Blocklist, BlockMatch, compile_rule, normalise
from .gemini import SafetySettings


@dataclass(frozen=True)
class SafetyRefusal:
    """Why a request was refused before it was queued. ``key`` is the member's (translated)
    message, which never repeats the rule; ``match`` is for the moderation log."""

    key: str
    match: BlockMatch | None = None
    model: str | None = None


@dataclass(frozen=True)
class SafetyPolicy:
    blocklist: tuple[str, ...] = ()
    nsfw_models: tuple[str, ...] = ()
    spoiler: bool = False
    gemini: SafetySettings = field(default_factory=SafetySettings)

    @functools.cached_property
    def matcher(self) -> Blocklist:
        # Entries were compiled when the admin added them; a stored entry this release no
        # longer takes is skipped rather than turning the whole list off.
        rules = []
        for entry in self.blocklist:
            try:
                rules.append(compile_rule(entry))
            except ConfigError:
                continue
        return Blocklist(rules)

    # --- questions the request path asks ---------------------------------------------------

    def refusal(self, texts: Iterable[str], *, model: str, channel_nsfw: bool) -> SafetyRefusal | None:
        """The first reason to refuse: a blocklisted word in any of ``texts`` (the prompt, a
        style's text), then a model this server keeps to NSFW channels."""
        for text in texts:
            match = self.matcher.check(text)
            if match is not None:
                return SafetyRefusal("safety.blocked", match=match)
        if model in self.nsfw_models and not channel_nsfw:
            return SafetyRefusal("toolkit.safety.nsfw_only", model=model)
        return None

    # --- validated changes -----------------------------------------------------------------

    def with_blocked(self, entry: str) -> SafetyPolicy:
        rule = compile_rule(entry)  # ConfigError for what a rule may not be
        if any(normalise(e) == normalise(rule.source) for e in self.blocklist):
            return self
        if len(self.blocklist) >= MAX_RULES:
            raise ConfigError("too many blocklist rules", key="safety.rule.too_many", limit=MAX_RULES)
        return dataclasses.replace(self, blocklist=(*self.blocklist, rule.source))

    def without_blocked(self, entry: str) -> SafetyPolicy:
        target = normalise(entry.strip())
        kept = tuple(e for e in self.blocklist if normalise(e) != target)
        if len(kept) == len(self.blocklist):
            raise ConfigError("no such blocklist rule", key="toolkit.safety.not_listed", rule=entry.strip()[:100])
        return dataclasses.replace(self, blocklist=kept)

    def with_nsfw_model(self, model: str, nsfw_only: bool) -> SafetyPolicy:
        """``model`` is a catalogue id (the caller resolves what the admin typed)."""
        models = [m for m in self.nsfw_models if m != model]
        if nsfw_only:
            models.append(model)
        return dataclasses.replace(self, nsfw_models=tuple(models))

    def with_spoiler(self, spoiler: bool) -> SafetyPolicy:
        return dataclasses.replace(self, spoiler=spoiler)

    def with_threshold(self, category: str, threshold: str | None) -> SafetyPolicy:
        return dataclasses.replace(self, gemini=self.gemini.with_threshold(category, threshold))

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "blocklist": list(self.blocklist),
            "nsfw_models": list(self.nsfw_models),
            "spoiler": self.spoiler,
            "gemini": self.gemini.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SafetyPolicy:
        """Stored rules back; a field missing (an older row) keeps its default."""
        base = cls()
        return cls(
            blocklist=tuple(str(e) for e in data.get("blocklist", base.blocklist)),
            nsfw_models=tuple(str(m) for m in data.get("nsfw_models", base.nsfw_models)),
            spoiler=bool(data.get("spoiler", base.spoiler)),
            gemini=SafetySettings.from_json(data.get("gemini")),
        )
