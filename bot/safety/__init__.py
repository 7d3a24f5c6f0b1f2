"""A server's safety rules as pure data (not wired to commands yet): a prompt blocklist
(blocklist) and Gemini ``safetySettings`` (gemini)."""

from .blocklist import MAX_RULES, Blocklist, BlockMatch, Rule, compile_rule, normalise
from .gemini import CATEGORIES, DEFAULT_THRESHOLDS, THRESHOLDS, SafetySettings, category_of, threshold_of

__all__ = [
    "CATEGORIES",
    "DEFAULT_THRESHOLDS",
    "MAX_RULES",
    "THRESHOLDS",
    "BlockMatch",
    "Blocklist",
    "Rule",
    "SafetySettings",
    "category_of",
    "compile_rule",
    "normalise",
    "threshold_of",
]
