"""What a relay calls each catalogue model, read from its model list.

Relays list models as Google does (``models[].name``, e.g. ``models/gemini-2.5-flash-image``)
or as OpenAI does (``data[].id``), under their own names: vendor prefixes (``google/``),
aliases (``nano-banana-pro``) and per-size names (``nano-banana-pro-4k``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalogue import MODELS, normalize_size, resolve_model
from .types import SIZE_SEP, InvalidRequest


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

    def wire_names(self) -> dict[str, str]:
        """``aliases`` plus the per-size names under ``"<id>@<size>"`` keys: the
        RelayConfig ``model_aliases`` that lets a 4K job ask for ``nano-banana-pro-4k``
        rather than every job being pinned to the one name in ``aliases``."""
        names = dict(self.aliases)
        for ours, by_size in self.sized.items():
            names.update({f"{ours}{SIZE_SEP}{size}": name for size, name in by_size.items()})
        return names


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
