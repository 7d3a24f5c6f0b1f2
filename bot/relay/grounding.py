"""Google Search grounding in the Gemini dialect: the tool sent, and the sources read back.

Image search (3.1 Flash) names its search types, ``{"googleSearch": {"searchTypes":
{"webSearch": {}, "imageSearch": {}}}}``; plain web grounding stays ``{"googleSearch": {}}``,
the form every relay passes through. An image-search answer's ``groundingMetadata`` carries
``imageSearchQueries`` (what the model looked up) and ``groundingChunks`` whose ``image``
entries give the page (``uri``, some relays ``sourceUri``) and the picture (``imageUri``).
Whoever shows such a source must link to its page, and a shown source picture must lead to
that page too: :class:`~.types.GroundingSource` keeps both, the page first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .answer import get
from .types import GroundingSource

# More than any answer lists; an answer past it is cut here rather than shown whole.
MAX_QUERIES = 16


def search_tool(image_search: bool) -> dict[str, Any]:
    if not image_search:
        return {"googleSearch": {}}
    return {"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}


def sources(candidate: dict[str, Any]) -> list[GroundingSource]:
    """Each grounding source once (by page), web, image and retrieval results alike; a page
    found by both searches keeps its picture."""
    meta = get(candidate, "groundingMetadata")
    found: dict[str, GroundingSource] = {}
    chunks = get(meta, "groundingChunks")
    for chunk in chunks if isinstance(chunks, list) else []:
        if not isinstance(chunk, dict):
            continue
        for kind in ("web", "image", "retrievedContext"):
            item = get(chunk, kind)
            if not isinstance(item, dict):
                continue
            uri = get(item, "uri") or get(item, "sourceUri") or ""
            if not isinstance(uri, str) or not uri:
                continue
            picture = get(item, "imageUri") or ""
            picture = picture if isinstance(picture, str) and picture.startswith("https://") else ""
            if uri in found:
                if picture and not found[uri].image_uri:
                    found[uri] = replace(found[uri], image_uri=picture)
                continue
            title = get(item, "title") or get(item, "domain") or uri
            found[uri] = GroundingSource(title=str(title), uri=uri, image_uri=picture)
    return list(found.values())


def image_queries(candidate: dict[str, Any]) -> list[str]:
    meta = get(candidate, "groundingMetadata")
    queries = get(meta, "imageSearchQueries")
    if not isinstance(queries, list):
        return []
    return [q for q in queries if isinstance(q, str) and q.strip()][:MAX_QUERIES]
