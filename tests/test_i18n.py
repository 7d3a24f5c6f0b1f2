"""Translations are checked like code: every key the code uses exists in both languages.

The key scan reads the source with ``ast`` (no imports of cogs, so no Discord needed) and finds
the places a catalog key is written down:

- the first argument of ``t(...)``/``has_key(...)`` and of helpers that forward their first
  parameter ``key`` to one (``_k`` in the cogs, ``UserFacingError``), found by reading the code;
- ``key="..."`` keyword arguments anywhere (``InvalidRequest``, ``ConfigError``, ``locale_str``…);
- ``key = "..."`` class attributes (error classes), ``self.key = ...`` assignments, and local
  variables handed to ``t()`` (``key = f"usage.reason.{code}"; t(key, locale)``);
- f-string keys with a fixed prefix (``f"error.no_image.{reason}"``), expanded with the finite
  set of suffixes the code can produce (``DYNAMIC_KEYS``).

A gap in a catalog shows up to users as a raw key, or for errors as the generic "something went
wrong" (``cogs/render.error_text`` only trusts keys that exist), so these are real bugs.
"""

from __future__ import annotations

import ast
import json
import re
import string
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot import i18n
from bot.i18n import normalize_locale, t
from bot.relay import answer

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("bot", "cogs")
LOCALES = ("en", "zh-CN")

# bot.i18n's own API: the first argument is a catalog key.
KEY_SINKS = frozenset({"t", "has_key"})

# f-string keys: the fixed prefix, and where the code spells out every suffix it can produce.
# "calls": callables whose literal first argument is a suffix; "returns": functions whose literal
# return values (or first items of returned tuples) are suffixes; "extra": fixed suffixes set
# outside Python. A new dynamic key must be registered here (a test says so).
DYNAMIC_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    # bot/relay/answer.py: no_image(reason, ...) -> NoImage(key=f"error.no_image.{reason}")
    "error.no_image.": {"calls": ("no_image",), "returns": ("finish_to_reason",)},
    # bot/urlguard.py: UnsafeURL(reason) -> key=f"admin.urlguard.{reason}"
    "admin.urlguard.": {"calls": ("UnsafeURL",), "returns": ()},
    # bot/quota.py: Allowance(scope, ...) -> QuotaExceeded(scope).key = f"quota.exceeded.{scope}"
    "quota.exceeded.": {"calls": ("Allowance",), "returns": ()},
    # bot/usage/report.py reason_label: the failure codes bot/jobs/model.py classify() stores. "interrupted" is
    # written by SQL on restart; other codes (http_NNN, no_image:x, error keys) have their own
    # texts or fall back to the bare code, so only these fixed words need a translation.
    "usage.reason.": {"calls": (), "returns": ("classify",), "extra": ("interrupted",)},
    # bot/usage.py reason_label: "no_image:<reason>" codes, the same reasons as error.no_image.
    "usage.reason.no_image.": {"calls": ("no_image",), "returns": ("finish_to_reason",)},
}

# zh-CN texts that may legitimately contain no Chinese characters (placeholders are ignored
# when checking, so "{seconds} 秒"-style formats need no entry). Keep it short and commented.
ZH_WITHOUT_CJK: frozenset[str] = frozenset(
    {
        "admin.relay.field_url_hint",  # an example URL in a modal field
        "admin.quota.cost_entry",  # "{model} · {size}：{credits}": a list-line layout, no words
        "usage.reason.http",  # "HTTP {status}": the protocol name reads the same in Chinese
    }
)

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
# Discord: slash command/option names (unicode letters allowed; lowercase where the script has case).
SLASH_NAME = re.compile(r"[-_\w]{1,32}")
DISCORD_BUTTON_LABEL_MAX = 80


# --- catalogs --------------------------------------------------------------------------------


def _load_flat(path: Path) -> dict[str, str]:
    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: dict[str, object] = {}
        for k, v in pairs:
            # json.loads would silently keep the last one; a duplicate is always a mistake.
            assert k not in seen, f"{path}: key {k!r} appears twice"
            seen[k] = v
        return seen

    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    assert isinstance(data, dict), f"{path}: must be a JSON object"
    for k, v in data.items():
        assert isinstance(v, str), f"{path}: {k!r} must map to a string, not {type(v).__name__}"
    return data


def _area_files(locale: str) -> dict[str, Path]:
    return {p.name: p for p in sorted((i18n.LOCALES_DIR / locale).glob("*.json"))}


@pytest.fixture(scope="module")
def catalogs() -> dict[str, dict[str, str]]:
    i18n.catalog.cache_clear()  # read the files as they are now, not as an earlier test saw them
    return {loc: dict(i18n.catalog(loc)) for loc in LOCALES}


def placeholders(text: str) -> set[str]:
    """Field names in a ``str.format`` text ("" for a positional ``{}``)."""
    names: set[str] = set()
    for _literal, field_name, spec, _conv in string.Formatter().parse(text):
        if field_name is None:
            continue
        names.add(re.split(r"[.\[]", field_name, maxsplit=1)[0])
        if spec:
            names |= placeholders(spec)
    return names


# --- the source scan -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyUse:
    key: str  # the whole key, or the fixed prefix of an f-string key
    where: str
    dynamic: bool = False
    # Keyword names supplied with the key at that place; None when unknown (``**params``, or a
    # class attribute whose params come from elsewhere).
    params: frozenset[str] | None = None


@dataclass
class Scan:
    uses: list[KeyUse] = field(default_factory=list)
    context_menu_keys: set[str] = field(default_factory=set)
    # option-name keys of one command (one app_commands.rename(...) call), with where
    option_groups: list[tuple[list[str], str]] = field(default_factory=list)
    # (key, English text written in the code, where) for locale_str names Discord shows as-is.
    code_texts: list[tuple[str, str, str]] = field(default_factory=list)
    # (key, max length, where): t("key")[:N] slices and button labels.
    length_limits: list[tuple[str, int, str]] = field(default_factory=list)
    # callee name -> literal first arguments; function name -> literal return values
    first_args: dict[str, set[str]] = field(default_factory=dict)
    returns: dict[str, set[str]] = field(default_factory=dict)


def _source_files() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _aliases(tree: ast.Module) -> dict[str, str]:
    """``from x import locale_str as _`` -> {"_": "locale_str"}."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
    return out


def _callee(func: ast.expr, aliases: dict[str, str]) -> str | None:
    if isinstance(func, ast.Name):
        return aliases.get(func.id, func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr  # i18n.t(...), app_commands.ContextMenu(...)
    return None


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _key_of(node: ast.AST | None) -> tuple[str, bool] | None:
    """A literal key, or the fixed prefix of an f-string key (dynamic=True)."""
    text = _str(node)
    if text is not None:
        return text, False
    if isinstance(node, ast.JoinedStr):
        if all(isinstance(v, ast.Constant) for v in node.values):
            return "".join(str(v.value) for v in node.values), False  # type: ignore[attr-defined]
        first = node.values[0] if node.values else None
        return (_str(first) or ""), True
    return None


def _first_param(args: ast.arguments, *, method: bool) -> str | None:
    params = [*args.posonlyargs, *args.args][1 if method else 0 :]
    return params[0].arg if params else None


def _forwards_key(body: ast.AST, sinks: set[str], aliases: dict[str, str]) -> tuple[bool, bool]:
    """(passes its ``key`` parameter on as a catalog key, does so into a locale_str)."""
    forwards = to_locale_str = False
    for node in ast.walk(body):
        if isinstance(node, ast.Call):
            callee = _callee(node.func, aliases)
            if callee in sinks and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "key":
                forwards = True
            for kw in node.keywords:
                if kw.arg == "key" and isinstance(kw.value, ast.Name) and kw.value.id == "key":
                    forwards = True
                    to_locale_str |= callee == "locale_str"
        elif isinstance(node, ast.Assign):
            if any(isinstance(tg, ast.Attribute) and tg.attr == "key" for tg in node.targets):
                if isinstance(node.value, ast.Name) and node.value.id == "key":
                    forwards = True
    return forwards, to_locale_str


def _discover_key_helpers(trees: dict[Path, ast.Module]) -> tuple[set[str], set[str]]:
    """Module-level functions, and classes by their ``__init__``, whose first parameter ``key``
    ends up as a catalog key (``_k``, ``UserFacingError``). Other functions with a ``key``
    parameter (``camel(key)``, ``mask(key)``) don't forward it, so they are not picked up."""
    sinks = set(KEY_SINKS)
    locale_str_helpers: set[str] = set()
    changed = True
    while changed:
        changed = False
        for tree in trees.values():
            aliases = _aliases(tree)
            for node in tree.body:
                target: ast.AST | None = None
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _first_param(node.args, method=False) == "key":
                    target = node
                elif isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name == "__init__" and _first_param(item.args, method=True) == "key":
                            target = item
                if target is None or node.name in sinks:  # type: ignore[attr-defined]
                    continue
                forwards, to_locale_str = _forwards_key(target, sinks, aliases)
                if forwards:
                    sinks.add(node.name)  # type: ignore[attr-defined]
                    if to_locale_str:
                        locale_str_helpers.add(node.name)  # type: ignore[attr-defined]
                    changed = True
    return sinks, locale_str_helpers


def _params(call: ast.Call) -> frozenset[str] | None:
    if any(kw.arg is None for kw in call.keywords):
        return None  # **params: unknown at this place
    return frozenset(kw.arg for kw in call.keywords if kw.arg and kw.arg != "key")


def _scan_file(path: Path, tree: ast.Module, sinks: set[str], locale_str_helpers: set[str], scan: Scan) -> None:
    aliases = _aliases(tree)
    rel = path.relative_to(ROOT).as_posix()

    def use(node: ast.AST, found: tuple[str, bool], params: frozenset[str] | None) -> None:
        scan.uses.append(KeyUse(found[0], f"{rel}:{node.lineno}", found[1], params))  # type: ignore[attr-defined]

    def literal_key_of_name(node: ast.AST | None) -> str | None:
        """The key inside ``name=_k("cmd.x", "x")`` or ``name=locale_str("x", key="cmd.x")``."""
        if not isinstance(node, ast.Call):
            return None
        callee = _callee(node.func, aliases)
        if callee in sinks and node.args:
            return _str(node.args[0])
        for kw in node.keywords:
            if kw.arg == "key":
                return _str(kw.value)
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = _callee(node.func, aliases)
            first = node.args[0] if node.args else None
            if callee and _str(first) is not None:
                scan.first_args.setdefault(callee, set()).add(_str(first))  # type: ignore[arg-type]
            if callee in sinks and (found := _key_of(first)):
                use(node, found, _params(node))
                if callee in locale_str_helpers and len(node.args) > 1 and (text := _str(node.args[1])) is not None:
                    scan.code_texts.append((found[0], text, f"{rel}:{node.lineno}"))
            for kw in node.keywords:
                if kw.arg == "key" and (found := _key_of(kw.value)):
                    use(node, found, _params(node))
                    if callee == "locale_str" and (text := _str(first)) is not None:
                        scan.code_texts.append((found[0], text, f"{rel}:{node.lineno}"))
                if kw.arg == "label" and callee == "Button" and (key := _sliced_or_plain_t_key(kw.value, aliases)):
                    scan.length_limits.append((key, DISCORD_BUTTON_LABEL_MAX, f"{rel}:{node.lineno}"))
            if callee == "rename":
                group = [k for kw in node.keywords if (k := literal_key_of_name(kw.value))]
                if group:
                    scan.option_groups.append((group, f"{rel}:{node.lineno}"))
            if callee in ("ContextMenu", "context_menu"):
                for kw in node.keywords:
                    if kw.arg == "name" and (key := literal_key_of_name(kw.value)):
                        scan.context_menu_keys.add(key)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            # t("modal.edit_title", locale)[:45]: the code knows Discord's limit; a translation
            # longer than that would be cut off mid-word.
            upper = node.slice.upper
            if node.slice.lower is None and isinstance(upper, ast.Constant) and isinstance(upper.value, int):
                if isinstance(node.value, ast.Call) and _callee(node.value.func, aliases) == "t" and node.value.args:
                    if (key := _str(node.value.args[0])) is not None:
                        scan.length_limits.append((key, upper.value, f"{rel}:{node.lineno}"))
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                value = None
                if isinstance(stmt, ast.Assign) and any(isinstance(tg, ast.Name) and tg.id == "key" for tg in stmt.targets):
                    value = stmt.value
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == "key":
                    value = stmt.value
                if value is not None and (found := _key_of(value)):
                    use(stmt, found, None)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            returned = {v for r in ast.walk(node) if isinstance(r, ast.Return) for v in _returned_strings(r.value)}
            if returned:
                scan.returns.setdefault(node.name, set()).update(returned)
            params: frozenset[str] | None = None
            for stmt in ast.walk(node):
                # self.params = {"limit": ..., ...} next to self.key = f"...": what the text may use
                if isinstance(stmt, ast.Assign) and any(isinstance(tg, ast.Attribute) and tg.attr == "params" for tg in stmt.targets):
                    if isinstance(stmt.value, ast.Dict) and all(_str(k) is not None for k in stmt.value.keys):
                        params = frozenset(_str(k) for k in stmt.value.keys)  # type: ignore[misc]
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.Assign) and any(isinstance(tg, ast.Attribute) and tg.attr == "key" for tg in stmt.targets):
                    if found := _key_of(stmt.value):
                        use(stmt, found, params)
            # key = f"usage.reason.{code}"; t(key, locale): a local variable handed to t().
            handed: dict[str, frozenset[str] | None] = {}
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and _callee(call.func, aliases) in sinks and call.args and isinstance(call.args[0], ast.Name):
                    handed[call.args[0].id] = _params(call)
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    name = stmt.targets[0].id
                    if name in handed and (found := _key_of(stmt.value)):
                        use(stmt, found, handed[name])


def _returned_strings(node: ast.AST | None) -> Iterator[str]:
    """Literal strings a ``return`` can give: ``"x"``, ``"a" if c else "b"``, or the first item
    of a returned tuple (``return "timeout", detail``)."""
    if isinstance(node, ast.Tuple) and node.elts:
        node = node.elts[0]
    if isinstance(node, ast.IfExp):
        yield from _returned_strings(node.body)
        yield from _returned_strings(node.orelse)
    elif (text := _str(node)) is not None:
        yield text


def _sliced_or_plain_t_key(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Call) and _callee(node.func, aliases) == "t" and node.args:
        return _str(node.args[0])
    return None


@pytest.fixture(scope="module")
def scan() -> Scan:
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in _source_files()}
    sinks, locale_str_helpers = _discover_key_helpers(trees)
    result = Scan()
    for path, tree in trees.items():
        _scan_file(path, tree, sinks, locale_str_helpers, result)
    return result


def _dynamic_suffixes(scan: Scan, prefix: str) -> set[str]:
    spec = DYNAMIC_KEYS[prefix]
    found: set[str] = set()
    for name in spec["calls"]:
        found |= scan.first_args.get(name, set())
    for name in spec["returns"]:
        found |= scan.returns.get(name, set())
    found |= set(spec.get("extra", ()))
    if prefix in ("error.no_image.", "usage.reason.no_image."):
        found |= set(answer._REASON_TEXT)  # every reason the relay layer has a message for
    return found


# --- 1. keys used in code exist in both catalogs ---------------------------------------------


def test_scan_finds_the_kinds_of_key_uses_the_code_has(scan: Scan) -> None:
    # Guards the scanner itself: if a refactor hides keys from it, the checks below would
    # silently check nothing.
    keys = {u.key for u in scan.uses}
    assert "cmd_error.unexpected" in keys  # t("...")
    assert "cmd.imagine" in keys  # _k("...") (cogs/texts.py) in cogs/imagine/cog.py
    assert "invalid.empty_prompt" in keys  # key="..." keyword
    assert "error.no_image" in keys  # class attribute
    assert "deliver.too_large" in keys  # UserFacingError("...")
    assert {u.key for u in scan.uses if u.dynamic} >= {"error.no_image.", "quota.exceeded.", "usage.reason."}
    assert "cmd.edit_image" in scan.context_menu_keys


def test_every_literal_key_used_in_code_exists_in_both_languages(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    missing = [
        f"{u.where}: {u.key!r} missing in {loc}" for u in scan.uses if not u.dynamic for loc in LOCALES if u.key not in catalogs[loc]
    ]
    assert not missing, "\n".join(missing)


def test_every_dynamic_key_prefix_is_registered(scan: Scan) -> None:
    unknown = [f"{u.where}: f-string key with prefix {u.key!r}" for u in scan.uses if u.dynamic and u.key not in DYNAMIC_KEYS]
    assert not unknown, "register these in DYNAMIC_KEYS with where their suffixes come from:\n" + "\n".join(unknown)


@pytest.mark.parametrize("prefix", sorted(DYNAMIC_KEYS))
def test_every_dynamic_key_variant_exists_in_both_languages(prefix: str, scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    assert any(u.dynamic and u.key == prefix for u in scan.uses), f"no code builds {prefix}…; drop it from DYNAMIC_KEYS"
    suffixes = _dynamic_suffixes(scan, prefix)
    assert suffixes, f"found no suffixes for {prefix}…: did {DYNAMIC_KEYS[prefix]} get renamed?"
    missing = [f"{prefix}{s} missing in {loc}" for s in sorted(suffixes) for loc in LOCALES if prefix + s not in catalogs[loc]]
    assert not missing, "\n".join(missing)


def test_no_image_reasons_are_all_known_to_the_relay_layer(scan: Scan) -> None:
    # no_image("x") with an x outside _REASON_TEXT would get the generic message in logs/CLI.
    used = scan.first_args.get("no_image", set()) | scan.returns.get("finish_to_reason", set())
    assert used and used <= set(answer._REASON_TEXT), sorted(used - set(answer._REASON_TEXT))


def test_texts_only_use_placeholders_the_code_supplies(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    # t() returns the raw text with "{name}" in it when a parameter is missing.
    problems = []
    for u in scan.uses:
        if u.params is None:
            continue
        keys = [u.key + s for s in sorted(_dynamic_suffixes(scan, u.key))] if u.dynamic and u.key in DYNAMIC_KEYS else [u.key]
        for key in keys:
            for loc in LOCALES:
                extra = placeholders(catalogs[loc].get(key, "")) - u.params
                if extra:
                    problems.append(f"{u.where}: {loc} {key!r} uses {sorted(extra)}, code passes {sorted(u.params)}")
    assert not problems, "\n".join(problems)


# --- 2. en and zh-CN match -------------------------------------------------------------------


def test_catalog_files_are_flat_unique_string_maps_with_the_same_areas() -> None:
    files = {loc: _area_files(loc) for loc in LOCALES}
    assert files["en"], "no English catalogs found"
    assert set(files["en"]) == set(files["zh-CN"]), "each feature area needs a file in both languages"
    for name in files["en"]:
        en, zh = _load_flat(files["en"][name]), _load_flat(files["zh-CN"][name])
        assert set(en) == set(zh), f"{name}: only in en: {sorted(set(en) - set(zh))}; only in zh-CN: {sorted(set(zh) - set(en))}"
        for loc, data in (("en", en), ("zh-CN", zh)):
            empty = [k for k, v in data.items() if not v.strip()]
            assert not empty, f"{loc}/{name}: empty texts {empty}"


def test_both_languages_have_exactly_the_same_keys(catalogs: dict[str, dict[str, str]]) -> None:
    en, zh = set(catalogs["en"]), set(catalogs["zh-CN"])
    assert en == zh, f"only in en: {sorted(en - zh)}; only in zh-CN: {sorted(zh - en)}"


def test_every_text_is_a_valid_format_string_with_named_fields(catalogs: dict[str, dict[str, str]]) -> None:
    # t() always calls str.format(**params): a stray "{" breaks the text, "{}" can never be filled.
    broken = []
    for loc in LOCALES:
        for key, text in catalogs[loc].items():
            try:
                names = placeholders(text)
            except ValueError as exc:
                broken.append(f"{loc} {key!r}: {exc}")
                continue
            if any(n == "" or n.isdigit() for n in names):
                broken.append(f"{loc} {key!r}: positional field in {text!r}")
    assert not broken, "\n".join(broken)


def test_both_languages_use_the_same_placeholders(catalogs: dict[str, dict[str, str]]) -> None:
    differ = [
        f"{key!r}: en {sorted(placeholders(en))} vs zh-CN {sorted(placeholders(catalogs['zh-CN'][key]))}"
        for key, en in catalogs["en"].items()
        if key in catalogs["zh-CN"] and placeholders(en) != placeholders(catalogs["zh-CN"][key])
    ]
    assert not differ, "\n".join(differ)


# --- 3. zh-CN is Chinese, en is not ----------------------------------------------------------


def _without_placeholders(text: str) -> str:
    return "".join(literal for literal, *_ in string.Formatter().parse(text))


def test_chinese_texts_are_in_chinese(catalogs: dict[str, dict[str, str]]) -> None:
    untranslated = [
        f"{key!r}: {text!r}"
        for key, text in catalogs["zh-CN"].items()
        if key not in ZH_WITHOUT_CJK and not CJK.search(_without_placeholders(text))
    ]
    assert not untranslated, "\n".join(untranslated)


def test_language_neutral_allow_list_is_current(catalogs: dict[str, dict[str, str]]) -> None:
    assert ZH_WITHOUT_CJK <= set(catalogs["zh-CN"]), sorted(ZH_WITHOUT_CJK - set(catalogs["zh-CN"]))


def test_english_texts_have_no_chinese(catalogs: dict[str, dict[str, str]]) -> None:
    pasted = [f"{key!r}: {text!r}" for key, text in catalogs["en"].items() if CJK.search(text)]
    assert not pasted, "\n".join(pasted)


# --- 4. Discord names, descriptions, choices -------------------------------------------------


# Areas prefix their command keys ("admin.cmd.relay_add", "quota.cmd"), so the kind of text is
# told by a segment of the key, not by its start.
def _segments(key: str) -> list[str]:
    return key.split(".")


def _is_name_key(key: str) -> bool:
    seg = _segments(key)
    return bool({"cmd", "opt"} & set(seg)) and seg[-1] != "desc"


def _is_description_key(key: str) -> bool:
    seg = _segments(key)
    return bool({"cmd", "opt"} & set(seg)) and seg[-1] == "desc"


def _is_choice_key(key: str) -> bool:
    return "choice" in _segments(key)


def test_discord_text_kinds_are_recognised() -> None:
    assert _is_name_key("cmd.imagine") and _is_name_key("admin.opt.user_daily") and _is_name_key("quota.cmd")
    assert _is_description_key("opt.image.desc") and _is_description_key("admin.cmd.relay_add.desc")
    assert _is_choice_key("choice.thinking.high") and _is_choice_key("admin.choice.auth.bearer")
    assert not _is_name_key("cmd_error.cooldown") and not _is_name_key("admin.relay.field_key")


def test_slash_command_and_option_names_are_valid_discord_names(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    bad = []
    for loc in LOCALES:
        for key, name in catalogs[loc].items():
            if not _is_name_key(key):
                continue
            if key in scan.context_menu_keys:
                # Context-menu names are shown as written: spaces and capitals are fine.
                if not 1 <= len(name) <= 32:
                    bad.append(f"{loc} {key!r}: context-menu name {name!r} must be 1-32 characters")
            elif not SLASH_NAME.fullmatch(name) or name != name.lower():
                bad.append(f"{loc} {key!r}: {name!r} is not a lowercase 1-32 character slash name (letters, digits, - or _)")
    assert not bad, "\n".join(bad)


def test_option_names_of_one_command_stay_distinct_in_each_language(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    # Discord refuses to sync a command whose options share a name; a translation that gives two
    # options the same word ("图片" for image1 and image2) would break the whole command tree.
    assert scan.option_groups, "the scan found no app_commands.rename(...)"
    clashes = []
    for keys, where in scan.option_groups:
        for loc in LOCALES:
            names = [catalogs[loc].get(k, k) for k in keys]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                clashes.append(f"{where}: {loc} option names repeat: {dupes}")
    assert not clashes, "\n".join(clashes)


def test_descriptions_and_choice_names_fit_discord(catalogs: dict[str, dict[str, str]]) -> None:
    bad = [
        f"{loc} {key!r}: {len(text)} characters"
        for loc in LOCALES
        for key, text in catalogs[loc].items()
        if _is_description_key(key) or _is_choice_key(key)
        if not 1 <= len(text) <= 100
    ]
    assert not bad, "\n".join(bad)


def test_texts_fit_the_discord_limits_the_code_cuts_them_to(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    assert scan.length_limits, "the scan found no t(...)[:N] or button labels"
    too_long = [
        f"{where}: {loc} {key!r} is {len(catalogs[loc][key])} characters, Discord allows {limit}"
        for key, limit, where in scan.length_limits
        for loc in LOCALES
        if key in catalogs[loc] and len(catalogs[loc][key]) > limit
    ]
    assert not too_long, "\n".join(too_long)


def test_english_names_written_in_code_match_the_english_catalog(scan: Scan, catalogs: dict[str, dict[str, str]]) -> None:
    # Discord shows the literal in the code to English users (the translator only supplies other
    # languages), so the en catalog must say the same or the checks above check the wrong name.
    assert scan.code_texts, "the scan found no locale_str names"
    differ = [
        f"{where}: code says {text!r}, en catalog says {catalogs['en'][key]!r} for {key!r}"
        for key, text, where in scan.code_texts
        if key in catalogs["en"] and catalogs["en"][key] != text
    ]
    assert not differ, "\n".join(differ)


# --- packaging -------------------------------------------------------------------------------


def test_every_catalog_file_is_shipped_in_the_package() -> None:
    # A wheel without the catalogs would show raw keys everywhere.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # package-data per package ("bot.locales.en" = ["*.json"]): each package's folder globbed.
    package_data = config["tool"]["setuptools"]["package-data"]
    patterns = {pkg: pats for pkg, pats in package_data.items() if pkg.startswith("bot.locales.")}
    files = {p.relative_to(ROOT / "bot").as_posix() for p in (ROOT / "bot" / "locales").rglob("*.json")}
    assert files
    # setuptools expands package-data with glob (where "*" stops at "/"), as Path.glob does.
    shipped = {
        p.relative_to(ROOT / "bot").as_posix()
        for pkg, pats in patterns.items()
        for pat in pats
        for p in (ROOT / Path(*pkg.split("."))).glob(pat)
    }
    unshipped = sorted(files - shipped)
    assert not unshipped, f"not matched by package-data {patterns}: {unshipped}"


# --- 5. t() and normalize_locale --------------------------------------------------------------


@pytest.fixture
def tiny_catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Real catalog files in a temporary folder, so fallbacks can be seen with keys that the
    real catalogs (which must stay complete) never lack."""
    for loc, areas in {
        "en": {
            "one.json": {"greet": "Hello {name}", "only_en": "English only"},
            "two.json": {"bye": "Bye"},
        },
        "zh-CN": {"one.json": {"greet": "你好，{name}"}, "two.json": {"bye": "再见"}},
    }.items():
        (tmp_path / loc).mkdir()
        for name, data in areas.items():
            (tmp_path / loc / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES_DIR", tmp_path)
    i18n.catalog.cache_clear()
    yield tmp_path
    i18n.catalog.cache_clear()  # the next user reads the real catalogs again


def test_t_translates_and_fills_parameters(tiny_catalogs: Path) -> None:
    assert t("greet", "zh-CN", name="小明") == "你好，小明"
    assert t("greet", "en", name="Ann") == "Hello Ann"
    assert t("bye", "zh-CN") == "再见"  # areas of one locale are merged


def test_t_falls_back_to_english_for_a_key_missing_in_chinese(tiny_catalogs: Path) -> None:
    assert t("only_en", "zh-CN") == "English only"


def test_t_returns_the_key_itself_for_an_unknown_key(tiny_catalogs: Path) -> None:
    assert t("no.such.key", "zh-CN") == "no.such.key"
    assert t("no.such.key", "en") == "no.such.key"


def test_t_with_a_missing_parameter_shows_the_text_instead_of_crashing(tiny_catalogs: Path) -> None:
    assert t("greet", "en") == "Hello {name}"


def test_a_key_defined_in_two_area_files_is_refused(tiny_catalogs: Path) -> None:
    (tiny_catalogs / "en" / "three.json").write_text(json.dumps({"bye": "See you"}), encoding="utf-8")
    i18n.catalog.cache_clear()
    with pytest.raises(ValueError, match="bye"):
        i18n.catalog("en")


def test_t_on_the_real_catalogs_uses_the_chinese_text(catalogs: dict[str, dict[str, str]]) -> None:
    i18n.catalog.cache_clear()
    key = "cmd_error.unexpected"
    assert t(key, "zh-CN") == catalogs["zh-CN"][key] != catalogs["en"][key]
    assert t(key, "en-US") == catalogs["en"][key]


class _LocaleLike:
    def __init__(self, value: str) -> None:
        self.value = value


@pytest.mark.parametrize("locale", ["zh-CN", "zh-TW", _LocaleLike("zh-CN"), _LocaleLike("zh-TW")])
def test_chinese_locales_map_to_simplified_chinese(locale: object) -> None:
    assert normalize_locale(locale) == "zh-CN"


def test_discord_chinese_locales_map_to_simplified_chinese() -> None:
    import discord  # tests may use it; only the services under bot/ must not

    assert normalize_locale(discord.Locale.chinese) == "zh-CN"
    assert normalize_locale(discord.Locale.taiwan_chinese) == "zh-CN"
    assert normalize_locale(discord.Locale.american_english) == "en"


@pytest.mark.parametrize("locale", ["en-US", "en-GB", "fr", "", None, _LocaleLike("de")])
def test_other_locales_map_to_english(locale: object) -> None:
    assert normalize_locale(locale) == "en"
