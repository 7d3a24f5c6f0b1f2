"""The relay layer's one request type in and one result type out, and its errors.

Nothing here knows about Discord or SQLite. Errors carry a translation ``key`` and ``params``
so the bot can say them in the user's language; ``str()`` is the English form for logs/CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Dialect = Literal["gemini", "openai-images", "openai-chat"]
AuthStyle = Literal["query", "bearer", "x-goog-api-key"]

# ``model_aliases`` keys for a relay's per-size model names: "<catalogue id>@<canonical size>".
SIZE_SEP = "@"

# The one list of each, for settings, the CLI, the admin commands and the relay store.
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)
AUTH_STYLES: tuple[AuthStyle, ...] = get_args(AuthStyle)


def default_auth(dialect: str) -> AuthStyle:
    """How a relay of ``dialect`` takes its key unless told otherwise: Google's own API (and the
    relays copying it) reads ``?key=``; OpenAI-style APIs read ``Authorization: Bearer``."""
    return "query" if dialect == "gemini" else "bearer"


@dataclass(frozen=True)
class RelayConfig:
    """Where and how to reach one relay. ``api_key`` never appears in repr or messages."""

    base_url: str
    dialect: Dialect = "gemini"
    auth: AuthStyle = "query"
    api_key: str = field(default="", repr=False)
    name: str = "default"
    # Our catalogue id -> the relay's model name, e.g. {"gemini-3-pro-image-preview": "nano-banana-pro"}.
    model_aliases: dict[str, str] = field(default_factory=dict)
    # Operator relays are trusted (loopback allowed); server-admin relays pass the URL guard.
    trusted: bool = True

    def model_name(self, model: str, size: str | None = None) -> str:
        """What this relay calls ``model`` at ``size`` (canonical): its per-size name when it
        lists one (``model_aliases["gemini-3-pro-image-preview@4K"] = "nano-banana-pro-4k"``,
        the gpt.ge style, where the name picks the resolution), else its name for the model,
        else our own id."""
        if size:
            sized = self.model_aliases.get(f"{model}{SIZE_SEP}{size}")
            if sized:
                return sized
        return self.model_aliases.get(model, model)


@dataclass(frozen=True)
class InputImage:
    """An input picture, identified by its bytes (the mime type is sniffed, never taken from a name)."""

    data: bytes = field(repr=False)
    mime_type: str

    def __repr__(self) -> str:
        return f"InputImage({self.mime_type}, {len(self.data)} bytes)"


@dataclass
class GenerationRequest:
    prompt: str
    model: str = "gemini-2.5-flash-image"
    images: list[InputImage] = field(default_factory=list)
    aspect_ratio: str | None = None
    size: str | None = None  # any case: "2k", "2K", "512px"; normalised by the catalogue
    # Previous turns for Gemini-native multi-turn, as Gemini `contents` entries exactly as
    # received (camelCase, thoughtSignature kept); base64 values may be strings or
    # bot.relay.stream.Blob objects (a model_turn reused as is). Dialects without history
    # use `images` (latest picture) + prompt instead.
    history: list[dict[str, Any]] = field(default_factory=list)
    grounding: bool = False
    # With ``grounding``: Google Image Search as well as web search (3.1 Flash).
    image_search: bool = False
    thinking: str | None = None  # "minimal" | "high" where the model supports it
    # Gemini dialect only: the request's ``safetySettings`` as bot.safety.SafetySettings.render()
    # gives them ([{"category", "threshold"}]); None sends none (the relay's defaults apply).
    safety_settings: list[dict[str, str]] | None = None


@dataclass
class Usage:
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Note:
    """Something the member should know about a delivered picture (e.g. the relay made another
    size than asked). ``key``/``params`` feed the translation layer; ``str()`` is English."""

    key: str
    text: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class GroundingSource:
    title: str
    uri: str  # the page
    image_uri: str = ""  # image search: the source picture itself (shown only with a link to ``uri``)


@dataclass
class GenerationResult:
    """One picture and what came with it.

    ``model_turn`` (Gemini dialect) is the model's ``content`` as received, keys camelCase,
    ready to go back as history. It is *not* always plain JSON: where the relay sent a big
    base64 string (an ``inlineData.data`` picture, or a data URL inside a text part), the turn
    holds a :class:`bot.relay.stream.Blob` whose ``data`` is the decoded bytes (the same bytes
    object as ``image``, not a copy). Rebuilding a 4K picture's 35 MB base64 costs ~80 ms of
    GIL, so it is done only on demand:

    - sending it back: put it in ``GenerationRequest.history`` as is (the client writes Blobs
      into the request body slice by slice, off the event loop);
    - storing it: ``Conversations.add_turn`` keeps ``Blob.data`` directly;
    - JSON text (a session file, a log): ``bot.relay.gemini.materialize(turn)`` gives the
      exact strings the relay sent.
    """

    image: bytes = field(repr=False)
    mime_type: str
    width: int
    height: int
    model: str
    text: str = ""  # the model's non-thought text
    usage: Usage = field(default_factory=Usage)
    sources: list[GroundingSource] = field(default_factory=list)
    # What the model searched Google Images for (image-search grounding).
    image_queries: list[str] = field(default_factory=list)
    # The model's `content` as received (Gemini dialect), to send back next turn; None otherwise.
    # May hold Blobs in place of big base64 strings (see the class docstring).
    model_turn: dict[str, Any] | None = None
    # The user turn that was sent, so a conversation store can record the exchange.
    user_turn: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    relay_name: str = ""
    # What differs from what was asked (size, ratio, controls the relay format cannot carry).
    notes: list[Note] = field(default_factory=list)


class RelayError(Exception):
    """Base of all relay-layer errors. ``key``/``params`` feed the translation layer."""

    key = "error.relay"
    exit_code = 4
    # The relay that raised it, set by the relay pool (bot.relays.pool) so the job records which
    # relay failed; None outside the pool (the CLI) or before any relay was tried.
    relay_name: str | None = None

    def __init__(self, message: str, *, key: str | None = None, **params: Any) -> None:
        super().__init__(message)
        if key:
            self.key = key
        self.params = params

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequest(RelayError):
    """Refused before anything was sent (CLI exit 2)."""

    key = "error.invalid"
    exit_code = 2


class NoImage(RelayError):
    """The relay answered, but without an image: blocked, refused, text only (CLI exit 3).

    ``reason`` is a machine code (``blocked``, ``safety``, ``no_image``, ``text_only``,
    ``recitation``…); ``model_text`` is the model's own words, if any.
    """

    key = "error.no_image"
    exit_code = 3

    def __init__(self, message: str, *, reason: str, model_text: str = "", detail: str = "", key: str | None = None) -> None:
        super().__init__(message, key=key, reason=reason, model_text=model_text, detail=detail)
        self.reason = reason
        self.model_text = model_text
        self.detail = detail


class RelayFailed(RelayError):
    """The relay failed after retries (CLI exit 4). ``status`` is the HTTP status or None."""

    key = "error.relay_failed"
    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        relay_message: str = "",
        retryable: bool = False,
        key: str | None = None,
    ) -> None:
        super().__init__(message, key=key, status=status, relay_message=relay_message)
        self.status = status
        self.relay_message = relay_message
        # True when another relay might succeed (429/5xx/network/timeout): drives failover.
        self.retryable = retryable


class RelayTimeout(RelayFailed):
    key = "error.timeout"
