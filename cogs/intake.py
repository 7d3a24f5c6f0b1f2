"""Taking a request in, before it becomes a job: the checks that need no download and send
nothing, and the input pictures downloaded and stored by hash. Shared by every way a job starts
(/imagine, a result's buttons and forms, a message in a result's thread)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import discord

from bot.modlog import LogEntry
from bot.relay.images import MAX_INPUT_BYTES
from bot.relay.types import InvalidRequest
from bot.safety.policy import SafetyRefusal
from bot.services import Services
from bot.studio import JobRequest
from cogs import render
from cogs.failures import UserFacingError

log = logging.getLogger(__name__)
# Every reference image of one request fetched from Discord's CDN within this (14 at most).
INTAKE_TIMEOUT_S = 120.0

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def upload_limit(interaction: discord.Interaction[discord.Client]) -> int:
    """Discord's upload limit where the result will be posted (boosted servers allow more)."""
    limit = getattr(interaction, "filesize_limit", None)
    if not limit and interaction.guild is not None:
        limit = interaction.guild.filesize_limit
    return int(limit or DEFAULT_UPLOAD_LIMIT)


def check_can_post(perms: discord.Permissions, *, in_thread: bool) -> None:
    """Refuse before the relay is paid when Discord says the bot could not post the result here
    (``app_permissions`` of the interaction); otherwise the member waits for a picture that is
    then lost at upload. 0 means Discord did not say: the upload path still explains a refusal."""
    if not perms.value:
        return
    needed = ("send_messages_in_threads" if in_thread else "send_messages", "attach_files", "embed_links")
    missing = [name for name in needed if not getattr(perms, name)]
    if missing:
        raise UserFacingError("cmd_error.bot_missing_permissions", permissions=", ".join(missing))


def check_attachments(attachments: Sequence[discord.Attachment]) -> None:
    """Refuse what we can see without downloading: declared non-images and oversized files."""
    for attachment in attachments:
        content_type = (attachment.content_type or "").split(";")[0].strip()
        if content_type and not content_type.startswith("image/"):
            raise InvalidRequest("not an image", key="invalid.not_image", name=attachment.filename)
        if attachment.size > MAX_INPUT_BYTES:
            raise InvalidRequest(
                "file too large",
                key="invalid.image_too_large",
                name=attachment.filename,
                size_mb=round(attachment.size / 2**20, 1),
                limit_mb=MAX_INPUT_BYTES // 2**20,
            )


async def vet(
    svc: Services,
    req: JobRequest,
    attachments: Sequence[discord.Attachment],
    *,
    guild_id: int | None,
    parent_channel_id: int | None,
    channel_id: int | None,
    user_id: int,
    role_ids: list[int],
    channel_nsfw: bool = False,
) -> None:
    """Every check that needs no download and sends nothing: the server's safety rules,
    options against the model, attachments, access rules, quota. Raises a translated refusal."""
    await check_safety(svc, req, guild_id=guild_id, channel_id=channel_id, user_id=user_id, channel_nsfw=channel_nsfw)
    check_attachments(attachments)
    await svc.studio.check(req, image_count=len(req.images) + len(attachments))
    await svc.authorize(guild_id, channel_id, user_id, role_ids, req.model, parent_channel_id=parent_channel_id)
    await svc.precheck_quota(guild_id, user_id, role_ids, req.model, req.size)


class SafetyRefused(UserFacingError):
    """The server's safety rules refused the request; ``refusal`` says which, for the log."""

    def __init__(self, refusal: SafetyRefusal) -> None:
        super().__init__(refusal.key, model=render.model_label(refusal.model) if refusal.model else "")
        self.refusal = refusal


async def check_safety(
    svc: Services, req: JobRequest, *, guild_id: int | None, channel_id: int | None, user_id: int, channel_nsfw: bool
) -> None:
    """The blocklist (on what the member typed and what the model is sent) and the NSFW-only
    models, before anything else: a refused prompt is never queued, sent or charged."""
    g = await svc.guild(guild_id)
    texts = [req.prompt] + ([req.display_prompt] if req.display_prompt else [])
    refusal = g.safety.refusal(texts, model=req.model, channel_nsfw=channel_nsfw)
    if refusal is None:
        return
    rule = refusal.match.rule_id if refusal.match else None
    log.info("guild %s: request of user %s in %s refused (%s, rule %s)", guild_id, user_id, channel_id, refusal.key, rule or "-")
    if guild_id is not None and rule is not None:
        entry = LogEntry(
            kind="refusal", guild_id=guild_id, user_id=user_id, prompt=req.display_prompt or req.prompt, channel_id=channel_id, rule_id=rule
        )
        svc.modlog.add(g.log_channel, entry)
    raise SafetyRefused(refusal)


def channel_is_nsfw(channel: object) -> bool:
    """Whether Discord marks ``channel`` age-restricted (a thread: its parent channel). A
    channel the bot cannot see counts as not restricted."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes. A file Discord no longer serves (deleted, or its link expired:
    404/403/410) is the member's to upload again, said in their language, not a bug."""
    try:
        return await attachment.read()
    except discord.HTTPException as exc:
        log.info("attachment %s could not be fetched: HTTP %s", attachment.id, exc.status)
        raise UserFacingError("fair.reference_gone") from None


async def store_inputs(svc: Services, req: JobRequest, attachments: Sequence[discord.Attachment]) -> None:
    """Download, identify and store each attachment by hash; the request refers to them by hash.
    Bounded in all (discord.py's read has no timeout of its own), so a request is queued, or
    refused, within a known time of its acknowledgement (bot.jobs.replies.ORPHAN_S relies on it)."""
    try:
        async with asyncio.timeout(INTAKE_TIMEOUT_S):
            for attachment in attachments:
                image = await svc.identify_image(await read_attachment(attachment), attachment.filename)
                req.images.append(await svc.images.put(image.data, image.mime_type))
    except TimeoutError:
        log.info("attachments not fetched within %.0f s", INTAKE_TIMEOUT_S)
        raise UserFacingError("fair.reference_slow") from None


def role_ids(member: discord.abc.User) -> list[int]:
    """The member's role ids (none for a user outside a server)."""
    return [r.id for r in getattr(member, "roles", [])]
