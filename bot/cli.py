"""``python -m bot generate``: make or edit a picture through the operator's relay.

Contract (admins and scripts rely on it):

    python -m bot generate PROMPT [--image PATH]... [--model ID] [--aspect-ratio R]
                                  [--size S] [--out PATH] [--json] [--session PATH]
                                  [--relay-url URL] [--format F] [--auth A]

- The relay comes from ``NB_RELAY_URL`` / ``NB_RELAY_FORMAT`` / ``NB_RELAY_AUTH`` /
  ``NB_API_KEY`` (and an optional ``.env``); the flags override all but the key, which is
  only ever read from the environment. Operator relays are trusted (loopback included).
- Exit codes: 0 picture written; 2 invalid input, nothing sent; 3 the relay answered without
  a picture (reason and the model's own words are printed); 4 the relay failed after retries
  (HTTP status and the relay's message, key redacted). 1 only for a local failure after the
  picture was made (the output file could not be written) or a bug in this program.
- Human messages go to stderr; stdout carries the written path, or with ``--json`` one JSON
  object as the last line (``path``, ``mime_type``, ``width``, ``height``, ``model``,
  ``elapsed_s``, ``text``, ``usage``, ``sources``...; on failure ``ok: false`` with the error).
- ``--session PATH`` keeps the conversation in a JSON file; when it exists the prompt
  continues it (Gemini: the exact previous turns, thought signatures included; other
  formats: the latest picture + the new instruction).

Environment knobs besides the relay (mainly for tests and slow relays):
``NB_RETRY_ATTEMPTS`` (default 4), ``NB_RETRY_BACKOFF`` (first backoff in seconds, default 1),
``NB_RETRY_MAX_BACKOFF`` (cap, also on Retry-After, default 60), ``NB_RELAY_TIMEOUT``
(seconds per attempt instead of the size-based default), ``NB_MODEL`` (default model),
``NB_MODEL_ALIASES`` (``catalogue-id=relay-name,...``), ``NB_LOCALE`` (``en``/``zh-CN``;
else taken from ``LANG``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from .i18n import normalize_locale, t
from .relay import images as relay_images
from .relay.catalogue import DEFAULT_MODEL, MODELS, display_size, resolve_model, timeout_for, validate
from .relay.client import HISTORY_BUDGET, RelayClient, approx_json_size
from .relay.gemini import history_image, materialize
from .relay.redact import RedactingFilter, redact, register_secret, terminal_safe
from .relay.types import (
    AUTH_STYLES,
    DIALECTS,
    GenerationRequest,
    GenerationResult,
    InputImage,
    InvalidRequest,
    NoImage,
    RelayConfig,
    RelayError,
    RelayFailed,
)
from .settings import SettingsError, load_dotenv, model_aliases, parse_relay, retry_policy

SESSION_FORMAT = "nano-banana-bot/session"
SESSION_VERSION = 1


class _Usage(Exception):
    """A command-line mistake: exit 2, nothing sent."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _parser(locale: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bot generate",
        description=t("cli.description", locale),
        epilog=t("cli.epilog", locale),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", metavar="PROMPT", help=t("cli.help.prompt", locale))
    parser.add_argument("--image", metavar="PATH", action="append", default=[], help=t("cli.help.image", locale))
    parser.add_argument("--model", metavar="ID", help=t("cli.help.model", locale, models=", ".join(MODELS)))
    parser.add_argument("--aspect-ratio", metavar="R", help=t("cli.help.ratio", locale))
    parser.add_argument("--size", metavar="S", help=t("cli.help.size", locale))
    parser.add_argument("--out", metavar="PATH", help=t("cli.help.out", locale))
    parser.add_argument("--json", action="store_true", help=t("cli.help.json", locale))
    parser.add_argument("--session", metavar="PATH", help=t("cli.help.session", locale))
    parser.add_argument("--relay-url", metavar="URL", help=t("cli.help.relay_url", locale))
    parser.add_argument("--format", choices=DIALECTS, help=t("cli.help.format", locale))
    parser.add_argument("--auth", choices=AUTH_STYLES, help=t("cli.help.auth", locale))
    parser.add_argument("--grounding", action="store_true", help=t("cli.help.grounding", locale))
    parser.add_argument("--thinking", metavar="LEVEL", help=t("cli.help.thinking", locale))
    return parser


def _locale(env: dict[str, str]) -> str:
    for name in ("NB_LOCALE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "").strip()
        if value:
            return normalize_locale(value.replace("_", "-"))
    return "en"


def _say(text: str) -> None:
    # Messages carry relay text (errors, the model's words): terminal_safe keeps its control
    # characters and line starts out of the operator's terminal.
    print(terminal_safe(text), file=sys.stderr, flush=True)


def _setup_logging(env: dict[str, str]) -> None:
    """Retry notices (WARNING from bot.relay) on stderr, redacted; NB_LOG_LEVEL=INFO shows each request."""
    level = env.get("NB_LOG_LEVEL", "WARNING").strip().upper() or "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING")


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    locale = _locale(env)
    _setup_logging(env)
    register_secret(env.get("NB_API_KEY", "").strip(), operator=True)
    try:
        return _run(list(sys.argv[1:] if argv is None else argv), env, locale)
    except KeyboardInterrupt:
        _say(t("cli.interrupted", locale))
        return 130
    except Exception as exc:  # a bug here must still not print a traceback (or a key)
        _say(t("cli.internal_error", locale, error=redact(f"{exc.__class__.__name__}: {exc}")))
        return 1


def _fail(job_json: bool, code: int, message: str, extra: dict[str, Any] | None = None) -> int:
    _say(message)
    if job_json:
        payload = {"ok": False, "exit_code": code, "message": message, **(extra or {})}
        print(json.dumps(payload, ensure_ascii=False), flush=True)
    return code


def _run(argv: list[str], env: dict[str, str], locale: str) -> int:
    wants_json = "--json" in argv
    try:
        args = _parser(locale).parse_args(argv)
    except _Usage as exc:
        return _fail(wants_json, 2, t("cli.usage_error", locale, error=str(exc)))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    # --- relay and knobs: all checked before anything is sent -------------------------------
    try:
        load_dotenv(Path(env.get("NB_ENV_FILE", ".env")), env)
        settings = parse_relay(env, url=args.relay_url, dialect=args.format, auth=args.auth)
        retry = retry_policy(env)  # the same NB_RETRY_* / NB_RELAY_TIMEOUT rules as the bot
        attempts, backoff, max_backoff, timeout = retry.attempts, retry.backoff, retry.max_backoff, retry.timeout
        aliases = model_aliases(env)
    except SettingsError as exc:
        return _fail(args.json, 2, t("cli.settings_error", locale, error=redact(str(exc))))
    if settings is None:
        return _fail(args.json, 2, t("cli.no_relay", locale))
    register_secret(settings.api_key, operator=True)
    relay = RelayConfig(
        base_url=settings.url,
        dialect=settings.dialect,  # type: ignore[arg-type]
        auth=settings.auth,  # type: ignore[arg-type]
        api_key=settings.api_key,
        name="cli",
        model_aliases=aliases,
        trusted=True,  # the operator's own relay: loopback and private addresses allowed
    )

    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()

    # --- session -----------------------------------------------------------------------------
    session_path = Path(args.session) if args.session else None
    session: dict[str, Any] | None = None
    if session_path is not None:
        try:
            session = _load_session(session_path)
        except ValueError as exc:
            return _fail(args.json, 2, t("cli.session_bad", locale, path=str(session_path), error=str(exc)))
        if not session_path.parent.is_dir():
            return _fail(args.json, 2, t("cli.session_dir_missing", locale, path=str(session_path)))

    model = args.model or (session or {}).get("model") or env.get("NB_MODEL", "").strip() or _default_model(relay.dialect)

    # --- input pictures ----------------------------------------------------------------------
    inputs: list[InputImage] = []
    for path in args.image:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return _fail(args.json, 2, t("cli.cannot_read", locale, path=path, error=exc.strerror or str(exc)))
        try:
            inputs.append(relay_images.prepare(data, label=path))
        except InvalidRequest as exc:
            return _fail(args.json, 2, _error_text(exc, locale), _error_fields(exc))

    # ``continuing``: the conversation itself goes back (turns, signatures). When it cannot
    # (another format or model, or not even the latest exchange fits one request), the latest
    # picture is sent as a fresh input instead, and the CLI says so: "continued" is then false.
    history: list[dict[str, Any]] = []
    continuing = from_picture = False
    if session and session.get("turns"):
        turns = session["turns"]
        same_model = _same_model(session.get("model"), model)
        if relay.dialect == "gemini" and session.get("dialect") == "gemini" and same_model:
            history = _trim(turns, budget=HISTORY_BUDGET)
            continuing = bool(history)
        if not continuing and not inputs:
            latest = history_image(turns)
            if latest is not None:
                inputs, from_picture = [latest], True
        if from_picture and relay.dialect == "gemini" and session.get("dialect") == "gemini" and same_model:
            _say(
                t(
                    "cli.note_history_too_large",
                    locale,
                    size_mb=round(approx_json_size(turns[-2:]) / 1e6),
                    limit_mb=round(HISTORY_BUDGET / 1e6),
                )
            )

    # A follow-up keeps the picture's shape unless told otherwise (a 2K picture stays 2K).
    same_session = bool(session) and _same_model((session or {}).get("model"), model)
    request = GenerationRequest(
        prompt=prompt,
        model=model,
        images=inputs,
        aspect_ratio=args.aspect_ratio or ((session or {}).get("aspect_ratio") if same_session else None),
        size=args.size or ((session or {}).get("size") if same_session else None),
        history=history,
        grounding=args.grounding,
        thinking=args.thinking,
    )
    try:
        checked = validate(request)
    except InvalidRequest as exc:
        return _fail(args.json, 2, _error_text(exc, locale), _error_fields(exc))

    out_path, out_folder, out_error = _output_path(args.out)
    if out_error:
        return _fail(args.json, 2, t("cli.bad_out", locale, path=args.out or "", error=out_error))

    allowance = timeout if timeout is not None else timeout_for(checked.size)
    _say(
        t(
            "cli.working",
            locale,
            model=checked.model,
            size=display_size(checked.size) if checked.size else t("cli.size_default", locale),
            relay=redact(relay.base_url, [relay.api_key]),
            dialect=relay.dialect,
            seconds=int(allowance),
        )
    )

    # --- the call ----------------------------------------------------------------------------
    try:
        result = asyncio.run(_generate(relay, checked, attempts, backoff, max_backoff, timeout))
    except InvalidRequest as exc:
        return _fail(args.json, 2, _error_text(exc, locale), _error_fields(exc))
    except NoImage as exc:
        lines = [_error_text(exc, locale)]
        if exc.model_text:
            lines.append(t("cli.model_said", locale, text=exc.model_text))
        return _fail(args.json, 3, "\n".join(lines), _error_fields(exc))
    except RelayFailed as exc:
        lines = [_error_text(exc, locale)]
        if exc.params.get("attempts"):
            lines.append(t("cli.gave_up", locale, attempts=exc.params["attempts"]))
        return _fail(args.json, 4, "\n".join(lines), _error_fields(exc))
    except RelayError as exc:
        return _fail(args.json, exc.exit_code, _error_text(exc, locale), _error_fields(exc))

    # --- write the picture, then the session -------------------------------------------------
    try:
        if out_folder is not None:
            out_folder.mkdir(parents=True, exist_ok=True)
        final = out_path or _default_name(result.mime_type, out_folder)
        final.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(final, result.image)
    except OSError as exc:
        # The picture was made but cannot be stored: not an input problem, not the relay's.
        return _fail(args.json, 1, t("cli.cannot_write", locale, path=str(out_path or out_folder or "."), error=exc.strerror or str(exc)))
    if out_path is not None and final.suffix.lower() not in _suffixes(result.mime_type):
        _say(t("cli.note_extension", locale, path=str(final), mime=result.mime_type))

    if session_path is not None:
        try:
            _save_session(session_path, session, relay, result, history, continuing, aspect_ratio=checked.aspect_ratio, size=checked.size)
        except OSError as exc:
            _say(t("cli.session_write_failed", locale, path=str(session_path), error=exc.strerror or str(exc)))

    _say(
        t(
            "cli.saved",
            locale,
            path=str(final),
            width=result.width,
            height=result.height,
            mime=result.mime_type,
            seconds=f"{result.elapsed_s:.1f}",
        )
    )
    for note in result.notes:  # another shape than asked, controls the format could not carry
        _say(t("cli.note", locale, text=t(note.key, locale, **note.params)))
    if result.text:
        _say(t("cli.model_said", locale, text=result.text))
    if result.sources:
        _say(t("cli.sources", locale))
        for source in result.sources:
            _say(f"  {source.title} <{source.uri}>")

    if args.json:
        payload = {
            "ok": True,
            "path": str(final.resolve()),
            "mime_type": result.mime_type,
            "width": result.width,
            "height": result.height,
            "bytes": len(result.image),
            "model": result.model,
            "relay_model": relay.model_aliases.get(result.model, result.model),
            "elapsed_s": result.elapsed_s,
            "text": result.text,
            "usage": result.usage.as_dict(),
            "sources": [{"title": s.title, "uri": s.uri} for s in result.sources],
            "session": str(session_path) if session_path else None,
            "continued": continuing,
            "from_latest_picture": from_picture,
            "notes": [{"key": n.key, **n.params} for n in result.notes],
        }
        print(json.dumps(payload, ensure_ascii=False), flush=True)
    else:
        print(str(final), flush=True)
    return 0


async def _generate(
    relay: RelayConfig, request: GenerationRequest, attempts: int, backoff: float, max_backoff: float, timeout: float | None
) -> GenerationResult:
    async with RelayClient(max_attempts=attempts, backoff_base=backoff, max_backoff=max_backoff, timeout=timeout) as client:
        return await client.generate(relay, request)


def _default_model(dialect: str) -> str:
    """Nano Banana 2 where the relay docs offer it (Gemini format, seeds 001/003); the OpenAI
    formats' docs (seeds 002/004) list only 2.5 Flash and 3 Pro, so those default to 3 Pro."""
    return DEFAULT_MODEL if dialect == "gemini" else "gemini-3-pro-image-preview"


def _error_text(exc: RelayError, locale: str) -> str:
    return redact(t(exc.key, locale, **exc.params))


def _error_fields(exc: RelayError) -> dict[str, Any]:
    fields: dict[str, Any] = {"error": exc.key}
    for name in ("reason", "model_text", "detail", "status", "relay_message", "retryable"):
        if hasattr(exc, name):
            value = getattr(exc, name)
            fields[name] = redact(value) if isinstance(value, str) else value
    return fields


def _same_model(a: Any, b: str) -> bool:
    try:
        return isinstance(a, str) and resolve_model(a).id == resolve_model(b).id
    except InvalidRequest:
        return False


# --- session file ---------------------------------------------------------------------------


def _load_session(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    if path.is_dir():
        raise ValueError("it is a directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a readable session file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
        raise ValueError("not a session file written by this program")
    turns = data.get("turns")
    if not isinstance(turns, list) or not all(isinstance(x, dict) for x in turns):
        raise ValueError("its turns are damaged")
    return data


def _trim(turns: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The most recent whole exchanges that fit ``budget`` bytes (oldest dropped first).

    Whole user+model pairs only: a history must start with a user turn, and a model turn
    must travel with its thought signatures exactly as received."""
    kept = list(turns)
    while kept and approx_json_size(kept) > budget:
        kept = kept[2:]
    while kept and kept[0].get("role") != "user":
        kept = kept[1:]
    return kept


def _save_session(
    path: Path,
    session: dict[str, Any] | None,
    relay: RelayConfig,
    result: GenerationResult,
    history: list[dict[str, Any]],
    continuing: bool,
    *,
    aspect_ratio: str | None = None,
    size: str | None = None,
) -> None:
    user_turn = result.user_turn or {"role": "user", "parts": []}
    if relay.dialect == "gemini" and result.model_turn is not None:
        # The model turn may hold Blobs (big pictures, decoded as they streamed in): JSON
        # needs them back as the base64 strings the relay sent.
        turns = materialize(history + [user_turn, result.model_turn])
    else:
        # Without multi-turn, only what the fallback needs: the latest exchange and picture.
        parts: list[dict[str, Any]] = []
        if result.text:
            parts.append({"text": result.text})
        parts.append({"inlineData": {"mimeType": result.mime_type, "data": base64.b64encode(result.image).decode("ascii")}})
        turns = [user_turn, {"role": "model", "parts": parts}]
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "dialect": relay.dialect,
        "model": result.model,
        "aspect_ratio": aspect_ratio,
        "size": size,
        "created": (session or {}).get("created", now),
        "updated": now,
        "turns": turns,
    }
    _atomic_write(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))


# --- output file ----------------------------------------------------------------------------


def _suffixes(mime: str) -> tuple[str, ...]:
    return {"image/jpeg": (".jpg", ".jpeg", ".jpe"), "image/png": (".png",), "image/webp": (".webp",)}.get(
        mime, (relay_images.extension_for(mime),)
    )


def _default_name(mime: str, folder: Path | None = None) -> Path:
    folder = folder or Path.cwd()
    stem = "nano-banana-" + time.strftime("%Y%m%d-%H%M%S")
    ext = relay_images.extension_for(mime)
    candidate = folder / f"{stem}{ext}"
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{ext}"
        n += 1
    return candidate


def _output_path(raw: str | None) -> tuple[Path | None, Path | None, str | None]:
    """(file, folder, problem): ``--out`` names a file, or a folder where the file name is
    chosen once the answer's mime type is known; checked before anything is sent."""
    if not raw:
        return None, None, None
    path = Path(raw).expanduser()
    if path.is_dir():
        if not _writable(path):
            return None, None, f"{path} is not writable"
        return None, path, None
    if raw.endswith(("/", os.sep)):
        if path.exists():
            return None, None, "it is a file, not a folder"
        return None, path, None
    parent = path.parent
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return None, None, f"{probe} is not a folder"
    if not _writable(probe):
        return None, None, f"{probe} is not writable"
    return path, None, None


def _writable(folder: Path) -> bool:
    """Whether a file can really be made in ``folder``: tried, not asked (os.access says yes
    to root everywhere, /proc included, and the relay would be paid before the write fails)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nb-check-", dir=str(folder))
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".nb-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
