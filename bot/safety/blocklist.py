"""A server's prompt blocklist as pure data: rules, their safe regex subset, the matcher.

Nothing here touches Discord, SQLite or the network: ``/admin safety`` stores the admin's
entries and the request path calls :meth:`Blocklist.check` before anything is queued.

Blocklist rules (one entry each; :func:`compile_rule` refuses anything else with a
translated :class:`ConfigError`):

- **plain words and phrases** — ``nsfw``, ``色情``, ``bad word``. Matched on the *normalised*
  prompt (see :func:`normalise`). Whitespace inside a phrase matches any run of spaces,
  punctuation or underscores, so ``bad word`` also catches ``bad-word`` and ``bad_word``.
- **wildcards** — ``*`` stands for any run of letters/digits inside one word:
  ``nud*`` catches ``nude`` and ``nudity``, ``*porn`` catches ``xxxporn``; a star between
  letters (``f*k``) spans at most 16 letters. Consecutive stars count as one; at most
  :data:`MAX_STARS` per rule.
- **regular expressions** — ``/.../``, at most :data:`MAX_REGEX_CHARS` characters, in a subset
  that cannot backtrack badly (Python's ``re`` has no timeout, so the subset is the bound):
  literals, escapes ``\\d \\w \\s \\b`` (and their capitals), classes ``[...]``, ``.``,
  ``|``, groups ``(...)``/``(?:...)``, anchors ``^ $``; quantifiers only ``?`` and ``{m}`` /
  ``{m,n}`` with n <= :data:`MAX_REPEAT`, only on a single character, class or escape (not on
  a group), at most :data:`MAX_QUANTIFIERS` per rule. No ``*``, ``+``, open ``{m,}``,
  back-references or look-arounds. Matched case-insensitively on the normalised prompt, with
  exactly the boundaries the admin writes.

Word boundaries (plain words and wildcards): Latin-style scripts separate words with spaces,
so a rule end that is a letter or digit of such a script must sit on a word boundary —
``ass`` does not match ``class`` or ``assistant``. Chinese, Japanese kana, Thai, Lao, Khmer and
Myanmar write without spaces, so a rule end in those scripts matches anywhere — ``色情``
matches inside ``这是色情图片`` — and a CJK character next to a Latin word counts as a
boundary (``猫ass`` matches ``ass``). Hangul uses spaces and is treated like Latin.

Normalisation, applied to prompts and rules alike: NFKC (full-width ``ＡＢＣ`` and
half-width forms fold to ordinary ones, ``①`` to ``1``), then ``casefold`` (``ß`` = ``ss``),
then format characters (category Cf: zero-width spaces and joiners, soft hyphens, BOMs)
removed, since they are invisible and only ever there to dodge a filter. Not folded:
accents (``nüde`` is not ``nude``), traditional vs simplified Chinese, look-alike letters
from other scripts.

The matched rule is reported (``rule_id``, ``rule``) for the moderation log only; the
member's refusal must not repeat it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..config_error import ConfigError

MAX_RULES = 500
MAX_RULE_CHARS = 100
MAX_REGEX_CHARS = 100
MAX_STARS = 2
MAX_QUANTIFIERS = 3
MAX_REPEAT = 5
# A star inside a word: bounded (16 letters), so two of them cost at most 17 x 17 tries per
# position: measured ~16 ms for a 6000-character prompt of one letter (Discord's option limit),
# ~70 ms at the catalogue's 30000-character prompt limit.
_INNER_STAR = r"[^\W_]{0,16}"
_END_STAR = r"[^\W_]*"
_SEPARATOR = r"[\W_]+"

# Scripts written without spaces between words (code point ranges).
_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


def _unspaced(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _UNSPACED)


def _spaced_word_char(ch: str) -> bool:
    """A letter or digit of a script that puts spaces between words."""
    return ch.isalnum() and not _unspaced(ch)


def normalise(text: str) -> str:
    """NFKC, casefold, format characters dropped (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # casefold can produce text that is not NFKC again (rare); one more pass keeps both stable.
    folded = unicodedata.normalize("NFKC", folded)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


RuleKind = Literal["word", "wildcard", "regex"]


@dataclass(frozen=True)
class Rule:
    source: str  # what the admin typed (trimmed)
    kind: RuleKind
    pattern: re.Pattern[str] = field(repr=False, compare=False)
    boundary_start: bool = False
    boundary_end: bool = False

    @property
    def rule_id(self) -> str:
        """Stable across edits of other rules: a short hash of the normalised rule."""
        return hashlib.sha256(normalise(self.source).encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True)
class BlockMatch:
    """Which rule refused a prompt: for the moderation log, never for the member."""

    rule_id: str
    rule: str
    kind: RuleKind


def _bad(*, rule: str, key: str, **params: object) -> ConfigError:
    reason = key.rsplit(".", 1)[-1].replace("_", " ")
    return ConfigError(f"blocklist rule {rule!r} refused: {reason}", key=key, rule=rule[:MAX_RULE_CHARS], **params)


def compile_rule(source: str) -> Rule:
    """One admin entry as a :class:`Rule`; ConfigError (``safety.rule.*``) if not allowed."""
    text = source.strip()
    if not text:
        raise _bad(rule=text, key="safety.rule.empty")
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return _regex_rule(text)
    if len(text) > MAX_RULE_CHARS:
        raise _bad(rule=text, key="safety.rule.too_long", limit=MAX_RULE_CHARS)
    norm = re.sub(r"\*+", "*", normalise(text))  # "f**k" means one run, not two
    stars = norm.count("*")
    if stars > MAX_STARS:
        raise _bad(rule=text, key="safety.rule.too_many_stars", limit=MAX_STARS)
    core = norm.strip("*").strip()
    if not any(ch.isalnum() for ch in core):
        raise _bad(rule=text, key="safety.rule.no_letters")
    words = norm.split()
    pieces: list[str] = []
    for wi, word in enumerate(words):
        parts = word.split("*")
        out: list[str] = []
        for pi, part in enumerate(parts):
            if pi:
                at_end = (wi == 0 and pi == 1 and parts[0] == "") or (wi == len(words) - 1 and pi == len(parts) - 1 and part == "")
                out.append(_END_STAR if at_end else _INNER_STAR)
            out.append(re.escape(part))
        pieces.append("".join(out))
    pattern = re.compile(_SEPARATOR.join(pieces))
    first, last = core[0], core[-1]
    return Rule(
        source=text,
        kind="wildcard" if stars else "word",
        pattern=pattern,
        boundary_start=_spaced_word_char(first),
        boundary_end=_spaced_word_char(last),
    )


_REGEX_ESCAPES = frozenset("dDwWsSbBnt")
_ANCHOR_ESCAPES = frozenset("bB")


def _regex_rule(text: str) -> Rule:
    if len(text) > MAX_REGEX_CHARS + 2:
        raise _bad(rule=text, key="safety.rule.too_long", limit=MAX_REGEX_CHARS)
    body = unicodedata.normalize("NFKC", text[1:-1])
    if not body:
        raise _bad(rule=text, key="safety.rule.empty")
    _check_subset(text, body)
    try:
        pattern = re.compile(body, re.IGNORECASE)
    except re.error:
        raise _bad(rule=text, key="safety.rule.bad_regex") from None
    return Rule(source=text, kind="regex", pattern=pattern)


def _check_subset(text: str, body: str) -> None:
    """Refuse anything outside the safe subset described in the module docstring."""
    i, n = 0, len(body)
    quantifiers = 0
    # What the previous token was: "atom" (quantifiable), "quant", "group_end", "start"
    # (start, after "(" or "|"), "anchor".
    prev = "start"
    while i < n:
        ch = body[i]
        if ch == "\\":
            if i + 1 >= n:
                raise _bad(rule=text, key="safety.rule.bad_regex")
            nxt = body[i + 1]
            if nxt.isalnum() and nxt not in _REGEX_ESCAPES:
                raise _bad(rule=text, key="safety.rule.regex_feature")  # back-references, \p, \N, ...
            prev = "anchor" if nxt in _ANCHOR_ESCAPES else "atom"
            i += 2
        elif ch == "[":
            prev, i = "atom", _class_end(text, body, i)
        elif ch == "(":
            if body.startswith("(?", i):
                if not body.startswith("(?:", i):
                    raise _bad(rule=text, key="safety.rule.regex_feature")  # look-arounds, named groups, flags
                i += 3
            else:
                i += 1
            prev = "start"
        elif ch == ")":
            prev, i = "group_end", i + 1
        elif ch == "|":
            prev, i = "start", i + 1
        elif ch in "^$":
            prev, i = "anchor", i + 1
        elif ch in "*+":
            raise _bad(rule=text, key="safety.rule.regex_unbounded")
        elif ch in "?{":
            step = _repeat_width(text, body, i) if ch == "{" else 1
            if prev != "atom":
                # On a group, after another quantifier, or on nothing.
                raise _bad(rule=text, key="safety.rule.regex_nested")
            quantifiers += 1
            if quantifiers > MAX_QUANTIFIERS:
                raise _bad(rule=text, key="safety.rule.regex_quantifiers", limit=MAX_QUANTIFIERS)
            prev, i = "quant", i + step
        else:
            prev, i = "atom", i + 1


def _class_end(text: str, body: str, i: int) -> int:
    """Where the character class opening at ``body[i]`` ("[") ends, one past its "]"."""
    n = len(body)
    j = i + 1
    if j < n and body[j] == "^":
        j += 1
    if j < n and body[j] == "]":
        j += 1
    while j < n and body[j] != "]":
        j += 2 if body[j] == "\\" else 1
    if j >= n:
        raise _bad(rule=text, key="safety.rule.bad_regex")
    return j + 1


def _repeat_width(text: str, body: str, i: int) -> int:
    """The length of the bounded repeat ``{m}``/``{m,n}`` at ``body[i]``; refused past MAX_REPEAT
    or without an upper bound."""
    m = re.match(r"\{(\d{1,2})(?:,(\d{0,2}))?\}", body[i:])
    if not m:
        raise _bad(rule=text, key="safety.rule.bad_regex")
    if m.group(2) == "":  # {m,}: no upper bound
        raise _bad(rule=text, key="safety.rule.regex_unbounded")
    top = int(m.group(2) if m.group(2) is not None else m.group(1))
    if top > MAX_REPEAT or int(m.group(1)) > top:
        raise _bad(rule=text, key="safety.rule.regex_repeat", limit=MAX_REPEAT)
    return m.end()


class Blocklist:
    """Compiled rules, checked in order; the first rule that matches is reported."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Blocklist:
        """Blank entries are skipped; one bad entry refuses the whole list (ConfigError)."""
        rules = [compile_rule(e) for e in entries if e.strip()]
        if len(rules) > MAX_RULES:
            raise ConfigError("too many blocklist rules", key="safety.rule.too_many", limit=MAX_RULES)
        return cls(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def check(self, text: str) -> BlockMatch | None:
        if not self.rules or not text:
            return None
        norm = normalise(text)
        for rule in self.rules:
            if _matches(rule, norm):
                return BlockMatch(rule.rule_id, rule.source, rule.kind)
        return None


def _matches(rule: Rule, text: str) -> bool:
    if rule.kind == "regex":
        return rule.pattern.search(text) is not None
    pos = 0
    while True:
        m = rule.pattern.search(text, pos)
        if m is None:
            return False
        start, end = m.start(), m.end()
        ok_start = not rule.boundary_start or start == 0 or not _spaced_word_char(text[start - 1])
        ok_end = not rule.boundary_end or end == len(text) or not _spaced_word_char(text[end])
        if ok_start and ok_end:
            return True
        pos = start + 1
