"""Everything the bot shares, opened once in ``setup_hook``: the database, one httpx client,
the relay pool, the stores and the job queue — plus the few questions cogs ask of them.

No Discord imports: a test can open :class:`Services` on a temp dir and call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import aiosqlite
import httpx

from . import fonts, pricing, rules, store
from .conversations import Conversations
from .db import locks
from .gallery import Gallery
from .guild_config import GuildConfigStore, GuildSettings
from .image_store import ORPHAN_DAYS, ImageStore, open_blobs
from .imaging import intake
from .jobs import Job, NewJob, make_queue
from .jobs.replies import ReplyStore
from .modlog import ModLog
from .preferences import PreferenceStore
from .quota import Quota, QuotaRules, personal_rules
from .relay import gate
from .relay.client import RelayClient
from .relay.redact import register_secret
from .relay.types import InputImage, RelayConfig, RelayError
from .relays.balances import BalanceChecker
from .relays.pool import NoRelay, RelayPool
from .relays.store import RelayStore
from .secrets import load_keyring
from .settings import Settings
from .studio import JobRequest, Studio
from .styles import StyleStore
from .urlguard import make_guard
from .variant_groups import VariantGroupStore

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 6 * 3600
GUILD_SETTINGS_MAX_AGE_S = 10.0  # how soon an admin's change reaches the other processes


class AccessDenied(RelayError):
    """The server's access rules refuse this member, channel or model (translated)."""

    key = "access.denied"
    exit_code = 2


# The log text of each refusal bot.rules.access_refusal names (members see the translation).
_REFUSED = {"access.channel": "not in this channel", "access.role": "role not allowed", "access.model": "model not allowed"}


@dataclass(frozen=True)
class Defaults:
    model: str
    aspect_ratio: str | None
    size: str | None
    threads: bool
    thread_mode: str


async def _not_ready(job: Job) -> None:
    raise RuntimeError("no job runner registered")


class Services:
    def __init__(
        self, settings: Settings, db: store.Connection, http: httpx.AsyncClient, reader: aiosqlite.Connection | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        # Read-only second connection (store.connect_reader) for reads an acknowledgement waits on.
        self.reader = reader
        self.http = http
        register_secret(settings.relay.api_key if settings.relay else None, operator=True)
        if settings.image_store is not None:
            register_secret(settings.image_store.secret_access_key, operator=True)
        fonts.configure(settings.font)  # NB_FONT for the usage chart
        self.keyring = load_keyring(settings.secret_key, settings.data_dir)
        retry = settings.retry  # NB_RETRY_* and NB_RELAY_TIMEOUT, as the CLI reads them
        self.relay_client = RelayClient(
            http,
            url_guard=make_guard(settings.allow_private_relays),
            max_attempts=retry.attempts,
            backoff_base=retry.backoff,
            max_backoff=retry.max_backoff,
            timeout=retry.timeout,
        )
        self.images = ImageStore(db, open_blobs(settings))  # NB_IMAGE_STORE: a bucket, else NB_DATA_DIR/images
        self.conversations = Conversations(db, self.images)
        # On PostgreSQL other processes may read a server's settings; see GuildConfigStore.
        self.guilds = GuildConfigStore(db, max_age=GUILD_SETTINGS_MAX_AGE_S if isinstance(db, store.PgConnection) else None)
        self.relays = RelayStore(db, self.keyring, allow_private=settings.allow_private_relays)
        self.balances = BalanceChecker(self.relay_client, self.relays)  # scheduled by cogs/modlog.py
        self.pool = RelayPool(
            self.relay_client, self.relays, settings, safety=self._gemini_safety, out_of_credit=self.balances.out_of_credit
        )
        self.quota = Quota(db, reader=reader)
        self.studio = Studio(self.pool, self.images, self.conversations)
        self.preferences = PreferenceStore(db, reader=reader)
        self.styles = StyleStore(db, self.images)
        self.gallery = Gallery(db)
        self.modlog = ModLog()  # posted by cogs/modlog.py
        self._runner: Callable[[Job], Awaitable[None]] = _not_ready
        self.jobs = make_queue(db, self.quota, settings, self._run, config=self.guilds)
        self.replies = ReplyStore(db, self.keyring)  # the interaction each job answers through
        self._prune_task: asyncio.Task[None] | None = None
        self._jobs_stopped = False

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = await store.connect(settings.database)
        try:
            reader = await store.connect_reader(settings.database)
        except BaseException:
            await db.close()
            raise
        # Relay answers are streamed; the read timeout is per request (scaled by size).
        http = httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=httpx.Limits(max_connections=64), follow_redirects=False)
        try:
            return cls(settings, db, http, reader)
        except BaseException:
            # e.g. an unusable secret.key: what was opened here is closed here (aiosqlite's
            # worker thread is not a daemon and would keep the process alive).
            await http.aclose()
            if reader is not None:
                await reader.close()
            await db.close()
            raise

    def set_handlers(
        self,
        *,
        runner: Callable[[Job], Awaitable[None]],
        on_position: Callable[[Job, int], Awaitable[None]] | None = None,
        on_interrupted: Callable[[Job], Awaitable[None]] | None = None,
    ) -> None:
        self._runner = runner
        self.jobs.on_position = on_position
        self.jobs.on_interrupted = on_interrupted

    async def _run(self, job: Job) -> None:
        with gate.job_scope():  # the job's big answer holds a slot until it is fitted: relay/gate.py
            await self._runner(job)

    async def start(self) -> None:
        await self._check_image_store()
        await self.jobs.start()
        self._prune_task = asyncio.create_task(self._prune_loop(), name="image-prune")

    async def stop_jobs(self) -> None:
        """Stop running and dispatching jobs. Running ones stay 'running' in the database, so the
        next start marks them interrupted, refunds them and offers Retry (as after a crash)."""
        if self._jobs_stopped:
            return  # a second call (close() after stop_jobs()) must not wait on them again
        self._jobs_stopped = True
        if self._prune_task:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
            self._prune_task = None
        await self.jobs.stop()

    async def close(self) -> None:
        try:
            await self.stop_jobs()
        finally:
            # The database last and always: its worker thread would otherwise outlive the loop.
            with contextlib.suppress(Exception):
                await self.http.aclose()
            with contextlib.suppress(Exception):
                await self.images.aclose()
            if self.reader is not None:
                with contextlib.suppress(Exception):
                    await self.reader.close()
            await self.db.close()

    async def _check_image_store(self) -> None:
        """One request to a bucket at start, so wrong settings are one clear line in the log
        now rather than a failure on the first picture. Not fatal: a bucket briefly out of reach
        should not keep the bot offline (each later failure is logged the same way)."""
        check = getattr(self.images.blobs, "check", None)
        if check is None:
            return
        try:
            await check()
        except OSError as exc:
            log.error("%s", exc)
        else:
            log.info("pictures are stored in %s", self.images.blobs.where)

    async def _prune_loop(self) -> None:
        while True:
            try:
                async with locks.duty(self.db, locks.PRUNE_DUTY) as mine:  # one process at a time
                    if mine:
                        await self._prune_once()
            except Exception:
                log.exception("image pruning failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    async def _prune_once(self) -> None:
        await self.styles.keep_images()  # style pictures are referred to by no turn or job
        removed = await self.images.prune(self.settings.retention_days)
        removed += await self.images.prune_orphans(min(self.settings.retention_days, ORPHAN_DAYS))
        removed += await self.conversations.prune_server_overflow()
        await self.images.prune_strays()
        if removed:
            log.info("pruned %d image(s) older than %d days", removed, self.settings.retention_days)

    # ---------------------------------------------------------------- questions cogs ask

    async def guild(self, guild_id: int | None) -> GuildSettings:
        return await self.guilds.get(guild_id)

    async def _gemini_safety(self, guild_id: int | None) -> list[dict[str, str]]:
        """The server's Gemini ``safetySettings`` (``/admin safety threshold``)."""
        return (await self.guild(guild_id)).safety.gemini.render()

    async def defaults(self, guild_id: int | None) -> Defaults:
        g = await self.guild(guild_id)
        return Defaults(
            model=g.default_model,
            aspect_ratio=g.default_ratio,
            size=g.default_size,
            threads=g.threads,
            thread_mode=g.thread_mode,
        )

    async def authorize(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        role_ids: Iterable[int],
        model: str,
        *,
        parent_channel_id: int | None = None,
    ) -> None:
        g = await self.guild(guild_id)
        refusal = rules.access_refusal(
            allowed_channels=g.allowed_channels,
            allowed_roles=g.allowed_roles,
            allowed_models=g.allowed_models,
            channel_id=channel_id,
            parent_id=parent_channel_id,
            role_ids=role_ids,
            model=model,
        )
        if refusal is not None:
            raise AccessDenied(_REFUSED[refusal], key=refusal, model=model, allowed=", ".join(g.allowed_models))
        # Without a server (personal use) the operator's relay is the only one, shared or not.
        shared = self.settings.share_default_relay or guild_id is None
        if await self.pool.uses_default(guild_id) and (self.pool.default_relay() is None or not shared):
            # Said now, not after the member has waited in the queue for a job that cannot run.
            raise NoRelay("this server has no relay configured")

    async def relay_order(self, guild_id: int | None) -> list[RelayConfig]:
        """The server's relays in failover order, else the operator's shared relay (if shared)."""
        # has_relays is answered from memory after the first ask: a server without relays of its
        # own (most of them, on the shared relay) costs no database round trip here.
        entries = await self.relays.entries(guild_id) if guild_id and await self.relays.has_relays(guild_id) else []
        if entries:
            return [e.config for e in entries]
        default = self.pool.default_relay()
        return [default] if default is not None and (self.settings.share_default_relay or guild_id is None) else []

    async def quota_rules(self, guild_id: int | None, g: GuildSettings | None = None) -> QuotaRules:
        """The server's rules, tightened by the operator's limits while it uses the shared relay;
        without a server, the personal quota (bot.quota.personal_rules)."""
        if guild_id is None:
            s = self.settings
            return personal_rules(user_daily=s.user_daily, daily=s.personal_daily, monthly=s.personal_monthly)
        rules = (g or await self.guild(guild_id)).quota
        if not await self.pool.uses_default(guild_id):
            return rules
        s = self.settings
        return pricing.shared_relay_rules(
            rules, user_daily=s.shared_user_daily, guild_daily=s.shared_guild_daily, guild_monthly=s.shared_guild_monthly
        )

    async def charge(self, guild_id: int | None, model: str, size: str | None) -> tuple[int, QuotaRules]:
        """What one picture costs this server (credits) and the quota rules it is checked against:
        asked once here, for the early check and for the job the queue is given."""
        g = await self.guild(guild_id)
        return pricing.credits(g.costs, model, size), await self.quota_rules(guild_id, g)

    async def precheck_quota(self, guild_id: int | None, user_id: int, role_ids: Iterable[int], model: str, size: str | None) -> None:
        credits, quota_rules = await self.charge(guild_id, model, size)
        await self.quota.check(guild_id=guild_id, user_id=user_id, credits=credits, rules=quota_rules, role_ids=list(role_ids))

    async def identify_image(self, data: bytes, label: str = "") -> InputImage:
        """Sniff, convert and vet an input picture off the event loop, a bounded number at once
        (see bot.imaging.intake)."""
        return await intake(data, label)

    async def submit_jobs(
        self,
        *,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        role_ids: Iterable[int],
        kind: str,
        requests: Sequence[JobRequest],
        progress_message_id: int | None,
        display_prompt: str | None = None,
        variant_group: int | None = None,
    ) -> list[Job]:
        """Queue the jobs of one request (one, or its variants) in one transaction, with their
        ``variant_group`` when they are variants: all of them or none (each priced and reserved)."""
        if not requests:
            raise ValueError("nothing to submit")
        news: list[tuple[NewJob, int]] = []
        quota_rules: QuotaRules | None = None
        for each in requests:
            req = dataclasses.replace(each, progress_message_id=progress_message_id, display_prompt=display_prompt or each.display_prompt)
            credits, quota_rules = await self.charge(guild_id, req.model, req.size)
            new = NewJob(
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                request=req.to_json(),
                model=req.model,
                size=pricing.canonical_size(req.model, req.size),
                kind=kind,
                locale=req.locale,
                conversation_id=req.conversation_id,
                parent_turn_id=req.parent_turn_id,
                progress_message_id=progress_message_id,
            )
            news.append((new, credits))

        async def group(tx: store.Connection, jobs: list[Job]) -> None:
            assert variant_group is not None
            await VariantGroupStore(self.db).expect_in(tx, variant_group, [j.id for j in jobs])

        assert quota_rules is not None  # one per request, all of one server
        also = group if variant_group is not None else None  # a single picture writes nothing more
        return await self.jobs.submit_many(news, rules=quota_rules, role_ids=list(role_ids), also=also)

    async def queue_position(self, job_id: int) -> int | None:
        return self.jobs.position(job_id)

    async def get_job(self, job_id: int) -> Job | None:
        return await self.jobs.get(job_id)

    async def cancel_job(self, job_id: int, user_id: int) -> str:
        """``cancelled``, or why not: ``delivering`` (its picture is being posted), ``too_late``,
        ``not_owner``, ``not_found`` (see :meth:`bot.jobs.JobQueue.cancel`)."""
        return await self.jobs.cancel(job_id, by_user=user_id)

    async def job_for_turn(self, turn_id: int) -> Job | None:
        turn = await self.conversations.get_turn(turn_id)
        if turn is None or turn.job_id is None:
            return None
        return await self.jobs.get(turn.job_id)

    async def record_result(self, job: Job, *, turn_id: int | None, message_id: int, relay_name: str, latency_ms: int) -> None:
        job.relay_name = relay_name
        job.latency_ms = latency_ms
        job.result_message_id = message_id
        await self.jobs.update(job.id, result_turn_id=turn_id, result_message_id=message_id, relay_name=relay_name, latency_ms=latency_ms)


def progress_message_id(job: Job) -> int | None:
    return job.progress_message_id or (job.request or {}).get("progress_message_id")
