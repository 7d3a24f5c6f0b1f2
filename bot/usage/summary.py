"""The usage report as a few translated lines for the admin's reply."""

from __future__ import annotations

from ..i18n import t
from .report import UsageReport


def _known(key: str, locale: object) -> str | None:
    text = t(key, locale)
    return None if text == key else text


def reason_label(code: str, locale: object) -> str:
    """A failure code (``http_503``, ``no_image:safety``, ``timeout``…) in words."""
    if code.startswith("http_"):
        return t("usage.reason.http", locale, status=code[5:])
    if code.startswith("no_image:"):
        reason = code.split(":", 1)[1]
        return _known(f"usage.reason.no_image.{reason}", locale) or t("usage.reason.no_image", locale, reason=reason)
    return _known(f"usage.reason.{code}", locale) or code


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f}"


def summary_text(report: UsageReport, locale: object) -> str:
    """A few lines for the admin's reply (Discord markdown and timestamps)."""
    lines = [t("usage.summary.title", locale, start=int(report.start), end=int(report.end) - 1)]
    if report.images == 0 and report.failures == 0 and report.cancelled == 0:
        lines.append(t("usage.summary.empty", locale))
        return "\n".join(lines)
    lines.append(
        t(
            "usage.summary.totals",
            locale,
            images=report.images,
            credits=report.credits,
            spend=f"{report.spend_usd:.2f}",
            failures=report.failures,
            rate=f"{report.failure_rate * 100:.0f}",
        )
    )
    if report.top_users:
        users = ", ".join(t("usage.summary.user", locale, user=u.user_id, images=u.images, credits=u.credits) for u in report.top_users)
        lines.append(t("usage.summary.top", locale, users=users))
    if report.failure_reasons:
        reasons = ", ".join(f"{reason_label(code, locale)} × {n}" for code, n in list(report.failure_reasons.items())[:5])
        lines.append(t("usage.summary.failures", locale, reasons=reasons))
    if report.latency:
        relays = ", ".join(
            t("usage.summary.relay", locale, relay=r.relay, p50=_seconds(r.p50_ms), p95=_seconds(r.p95_ms), count=r.count)
            for r in report.latency[:5]
        )
        lines.append(t("usage.summary.latency", locale, relays=relays))
    return "\n".join(lines)
