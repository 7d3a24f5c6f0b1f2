"""Gemini ``safetySettings`` as pure data: harm categories, thresholds, the server's choice.

The Gemini dialect sends :meth:`SafetySettings.render` as the request's ``safetySettings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config_error import ConfigError

# The Gemini API's HarmCategory values that generateContent takes in safetySettings.
CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
# HarmBlockThreshold values, most blocking first. BLOCK_NONE still returns safety ratings;
# OFF turns the filter off (and drops the ratings). Unset = the relay's/Google's default.
THRESHOLDS = ("BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")

# Community defaults. Google's own default for current models is to block little or nothing
# in these categories, which suits a developer, not a Discord server open to anyone:
# - sexual content is blocked from a low probability up (pictures are the risk here; an
#   admin can relax it, e.g. for NSFW channels);
# - harassment, hate and dangerous content from a medium probability up (Google's long-time
#   middle setting: blocks the clear cases without refusing every edgy joke);
# - civic integrity is not sent: Google marks HARM_CATEGORY_CIVIC_INTEGRITY deprecated ("Election
#   filter is no longer supported"), so a default for it would only risk a 400 from a strict
#   relay. An admin who wants it on an older model can still set it.
DEFAULT_THRESHOLDS: Mapping[str, str] = {
    "HARM_CATEGORY_HARASSMENT": "BLOCK_MEDIUM_AND_ABOVE",
    "HARM_CATEGORY_HATE_SPEECH": "BLOCK_MEDIUM_AND_ABOVE",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT": "BLOCK_LOW_AND_ABOVE",
    "HARM_CATEGORY_DANGEROUS_CONTENT": "BLOCK_MEDIUM_AND_ABOVE",
}

# Short names admins may type: "harassment", "hate", "sexual", "dangerous", "civic";
# "low", "medium", "high", "none", "off".
_CATEGORY_NAMES = {
    "harassment": "HARM_CATEGORY_HARASSMENT",
    "hate": "HARM_CATEGORY_HATE_SPEECH",
    "hate_speech": "HARM_CATEGORY_HATE_SPEECH",
    "sexual": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "sexually_explicit": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "dangerous": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "dangerous_content": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "civic": "HARM_CATEGORY_CIVIC_INTEGRITY",
    "civic_integrity": "HARM_CATEGORY_CIVIC_INTEGRITY",
}
_THRESHOLD_NAMES = {
    "low": "BLOCK_LOW_AND_ABOVE",
    "medium": "BLOCK_MEDIUM_AND_ABOVE",
    "high": "BLOCK_ONLY_HIGH",
    "none": "BLOCK_NONE",
    "off": "OFF",
}


def category_of(name: str) -> str:
    """``sexual`` / ``HARM_CATEGORY_SEXUALLY_EXPLICIT`` -> the API value; ConfigError if unknown."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    value = _CATEGORY_NAMES.get(key) or (name.strip().upper() if name.strip().upper() in CATEGORIES else None)
    if value is None:
        raise ConfigError("unknown harm category", key="safety.bad_category", value=name, allowed=", ".join(_CATEGORY_NAMES))
    return value


def threshold_of(name: str) -> str:
    """``medium`` / ``BLOCK_MEDIUM_AND_ABOVE`` -> the API value; ConfigError if unknown."""
    key = name.strip().lower()
    value = _THRESHOLD_NAMES.get(key) or (name.strip().upper() if name.strip().upper() in THRESHOLDS else None)
    if value is None:
        raise ConfigError("unknown threshold", key="safety.bad_threshold", value=name, allowed=", ".join(_THRESHOLD_NAMES))
    return value


@dataclass(frozen=True)
class SafetySettings:
    """Per-category thresholds; a category left out is not sent (the relay's default applies)."""

    thresholds: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def __post_init__(self) -> None:
        for category, threshold in self.thresholds.items():
            if category not in CATEGORIES:
                raise ConfigError("unknown harm category", key="safety.bad_category", value=category, allowed=", ".join(_CATEGORY_NAMES))
            if threshold not in THRESHOLDS:
                raise ConfigError("unknown threshold", key="safety.bad_threshold", value=threshold, allowed=", ".join(_THRESHOLD_NAMES))

    @classmethod
    def defaults(cls) -> SafetySettings:
        return cls()

    def with_threshold(self, category: str, threshold: str | None) -> SafetySettings:
        """A copy with one category changed (names as :func:`category_of`/:func:`threshold_of`
        take them); ``None`` removes it, so the relay's default applies."""
        cat = category_of(category)
        out = dict(self.thresholds)
        if threshold is None:
            out.pop(cat, None)
        else:
            out[cat] = threshold_of(threshold)
        return SafetySettings(out)

    def render(self) -> list[dict[str, str]]:
        """The Gemini request body's ``safetySettings``: ``[{"category", "threshold"}]`` in
        the API's category order."""
        return [{"category": c, "threshold": self.thresholds[c]} for c in CATEGORIES if c in self.thresholds]

    def to_json(self) -> dict[str, str]:
        return dict(self.thresholds)

    @classmethod
    def from_json(cls, data: Mapping[str, str] | None) -> SafetySettings:
        """Stored settings back; ``None`` (nothing stored yet) gives the defaults."""
        return cls() if data is None else cls(dict(data))
