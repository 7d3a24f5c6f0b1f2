"""``python -m bot generate``, step by step: arguments, relay, session, inputs, request, the
call, the picture written, the report. Each step that refuses raises :class:`_Failed` with its
exit code and translated message; :func:`main` never lets a traceback (or a key) out."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..env import SettingsError, load_dotenv
from ..i18n import normalize_locale, t
from ..relay import images as relay_images
from ..relay.catalogue import DEFAULT_MODEL, MODELS, display_size, timeout_for, validate
from ..relay.client import RelayClient
from ..relay.redact import RedactingFilter, redact, register_secret, terminal_safe
from ..relay.types import (
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
from ..settings import RetryPolicy, model_aliases, parse_relay, retry_policy
from . import files
from . import session as sessions


class _Failed(Exception):
    """A step refused: exit with ``code``; ``message`` for the operator, ``extra`` for --json."""

    def __init__(self, code: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


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


def _refused(exc: RelayError, locale: str, code: int = 2) -> _Failed:
    return _Failed(code, _error_text(exc, locale), _error_fields(exc))


def _run(argv: list[str], env: dict[str, str], locale: str) -> int:
    wants_json = "--json" in argv
    try:
        args = _parser(locale).parse_args(argv)
    except _Usage as exc:
        return _fail(wants_json, 2, t("cli.usage_error", locale, error=str(exc)))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return _generate_picture(args, env, locale)
    except _Failed as failed:
        return _fail(args.json, failed.code, failed.message, failed.extra)


def _generate_picture(args: argparse.Namespace, env: dict[str, str], locale: str) -> int:
    relay, retry = _relay(args, env, locale)  # everything checked before anything is sent
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    session_path, session = _open_session(args.session, locale)
    model = args.model or (session or {}).get("model") or env.get("NB_MODEL", "").strip() or _default_model(relay.dialect)
    plan = sessions.continuation(session, relay.dialect, model, _inputs(args.image, locale))
    if plan.too_large_mb is not None:
        _say(t("cli.note_history_too_large", locale, size_mb=plan.too_large_mb[0], limit_mb=plan.too_large_mb[1]))
    # A follow-up keeps the picture's shape unless told otherwise (a 2K picture stays 2K).
    same_session = bool(session) and sessions.same_model((session or {}).get("model"), model)
    request = GenerationRequest(
        prompt=prompt,
        model=model,
        images=plan.inputs,
        aspect_ratio=args.aspect_ratio or ((session or {}).get("aspect_ratio") if same_session else None),
        size=args.size or ((session or {}).get("size") if same_session else None),
        history=plan.history,
        grounding=args.grounding,
        thinking=args.thinking,
    )
    try:
        checked = validate(request)
    except InvalidRequest as exc:
        raise _refused(exc, locale) from None
    out_path, out_folder, out_error = files.output_path(args.out)
    if out_error:
        raise _Failed(2, t("cli.bad_out", locale, path=args.out or "", error=out_error))
    allowance = retry.timeout if retry.timeout is not None else timeout_for(checked.size)
    size = display_size(checked.size) if checked.size else t("cli.size_default", locale)
    relay_url = redact(relay.base_url, [relay.api_key])
    _say(t("cli.working", locale, model=checked.model, size=size, relay=relay_url, dialect=relay.dialect, seconds=int(allowance)))

    result = _call(relay, checked, retry, locale)
    final = _write_picture(result, out_path, out_folder, locale)
    if session_path is not None:
        try:
            sessions.save(
                session_path, session, relay, result, plan.history, plan.continuing, aspect_ratio=checked.aspect_ratio, size=checked.size
            )
        except OSError as exc:
            _say(t("cli.session_write_failed", locale, path=str(session_path), error=exc.strerror or str(exc)))
    _report(result, final, locale)
    if args.json:
        print(json.dumps(_json_result(result, final, relay, session_path, plan), ensure_ascii=False), flush=True)
    else:
        print(str(final), flush=True)
    return 0


def _relay(args: argparse.Namespace, env: dict[str, str], locale: str) -> tuple[RelayConfig, RetryPolicy]:
    try:
        load_dotenv(Path(env.get("NB_ENV_FILE", ".env")), env)
        settings = parse_relay(env, url=args.relay_url, dialect=args.format, auth=args.auth)
        retry = retry_policy(env)  # the same NB_RETRY_* / NB_RELAY_TIMEOUT rules as the bot
        aliases = model_aliases(env)
    except SettingsError as exc:
        raise _Failed(2, t("cli.settings_error", locale, error=redact(str(exc)))) from None
    if settings is None:
        raise _Failed(2, t("cli.no_relay", locale))
    register_secret(settings.api_key, operator=True)
    relay = RelayConfig(
        base_url=settings.url,
        dialect=settings.dialect,  # type: ignore[arg-type]  # parse_relay checked it against DIALECTS
        auth=settings.auth,  # type: ignore[arg-type]  # and this against AUTH_STYLES
        api_key=settings.api_key,
        name="cli",
        model_aliases=aliases,
        trusted=True,  # the operator's own relay: loopback and private addresses allowed
    )
    return relay, retry


def _open_session(raw: str | None, locale: str) -> tuple[Path | None, dict[str, Any] | None]:
    if not raw:
        return None, None
    path = Path(raw)
    try:
        session = sessions.load(path)
    except ValueError as exc:
        raise _Failed(2, t("cli.session_bad", locale, path=str(path), error=str(exc))) from None
    if not path.parent.is_dir():
        raise _Failed(2, t("cli.session_dir_missing", locale, path=str(path)))
    return path, session


def _inputs(paths: list[str], locale: str) -> list[InputImage]:
    inputs: list[InputImage] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise _Failed(2, t("cli.cannot_read", locale, path=path, error=exc.strerror or str(exc))) from None
        try:
            inputs.append(relay_images.prepare(data, label=path))
        except InvalidRequest as exc:
            raise _refused(exc, locale) from None
    return inputs


def _call(relay: RelayConfig, request: GenerationRequest, retry: RetryPolicy, locale: str) -> GenerationResult:
    try:
        return asyncio.run(_generate(relay, request, retry))
    except InvalidRequest as exc:
        raise _refused(exc, locale) from None
    except NoImage as exc:
        lines = [_error_text(exc, locale)]
        if exc.model_text:
            lines.append(t("cli.model_said", locale, text=exc.model_text))
        raise _Failed(3, "\n".join(lines), _error_fields(exc)) from None
    except RelayFailed as exc:
        lines = [_error_text(exc, locale)]
        if exc.params.get("attempts"):
            lines.append(t("cli.gave_up", locale, attempts=exc.params["attempts"]))
        raise _Failed(4, "\n".join(lines), _error_fields(exc)) from None
    except RelayError as exc:
        raise _refused(exc, locale, exc.exit_code) from None


async def _generate(relay: RelayConfig, request: GenerationRequest, retry: RetryPolicy) -> GenerationResult:
    async with RelayClient(
        max_attempts=retry.attempts, backoff_base=retry.backoff, max_backoff=retry.max_backoff, timeout=retry.timeout
    ) as client:
        return await client.generate(relay, request)


def _write_picture(result: GenerationResult, out_path: Path | None, out_folder: Path | None, locale: str) -> Path:
    try:
        if out_folder is not None:
            out_folder.mkdir(parents=True, exist_ok=True)
        final = out_path or files.default_name(result.mime_type, out_folder)
        final.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(final, result.image)
    except OSError as exc:
        # The picture was made but cannot be stored: not an input problem, not the relay's.
        where = str(out_path or out_folder or ".")
        raise _Failed(1, t("cli.cannot_write", locale, path=where, error=exc.strerror or str(exc))) from None
    if out_path is not None and final.suffix.lower() not in files.suffixes(result.mime_type):
        _say(t("cli.note_extension", locale, path=str(final), mime=result.mime_type))
    return final


def _report(result: GenerationResult, final: Path, locale: str) -> None:
    seconds = f"{result.elapsed_s:.1f}"
    _say(t("cli.saved", locale, path=str(final), width=result.width, height=result.height, mime=result.mime_type, seconds=seconds))
    for note in result.notes:  # another shape than asked, controls the format could not carry
        _say(t("cli.note", locale, text=t(note.key, locale, **note.params)))
    if result.text:
        _say(t("cli.model_said", locale, text=result.text))
    if result.sources:
        _say(t("cli.sources", locale))
        for source in result.sources:
            _say(f"  {source.title} <{source.uri}>")


def _json_result(
    result: GenerationResult, final: Path, relay: RelayConfig, session_path: Path | None, plan: sessions.Continuation
) -> dict[str, Any]:
    return {
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
        "continued": plan.continuing,
        "from_latest_picture": plan.from_picture,
        "notes": [{"key": n.key, **n.params} for n in result.notes],
    }


def _default_model(dialect: str) -> str:
    """Nano Banana 2 for the Gemini format; relays of the OpenAI formats commonly list only
    2.5 Flash and 3 Pro, so those default to 3 Pro."""
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
