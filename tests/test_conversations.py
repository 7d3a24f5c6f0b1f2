from __future__ import annotations

import base64
import io
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot import store
from bot.conversations import BLOB_BYTES, Conversations, ImagePruned
from bot.image_store import ImageStore
from bot.relay.client import RelayClient
from bot.relay.gemini import materialize
from bot.relay.stream import Blob
from bot.relay.types import GenerationRequest, RelayConfig
from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble, gemini_answer_body

DAY = 86400.0
GUILD, CHANNEL, OWNER, THREAD = 111, 222, 333, 444


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.fixture
async def env(tmp_path: Path, data_dir: Path):
    db = await store.connect(tmp_path / "db" / "bot.sqlite3")
    images = ImageStore(db, data_dir / "images")
    try:
        yield Conversations(db, images)
    finally:
        await db.close()


def user_turn(text: str, *images: bytes) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    parts += [{"inlineData": {"mimeType": "image/png", "data": b64(img)}} for img in images]
    return {"role": "user", "parts": parts}


def model_turn(final: bytes, draft: bytes | None, sig: str) -> dict[str, Any]:
    """Shaped like a Gemini 3 answer: thoughts first (a draft image among them), then the
    signed text and signed final image, with keys in the order the API writes them."""
    parts: list[dict[str, Any]] = [{"text": "Planning the composition…", "thought": True}]
    if draft is not None:
        parts.append({"inlineData": {"mimeType": "image/png", "data": b64(draft)}, "thought": True})
    parts.append({"text": "Here is your picture.", "thoughtSignature": f"{sig}-text"})
    parts.append({"thoughtSignature": f"{sig}-image", "inlineData": {"mimeType": "image/png", "data": b64(final)}})
    return {"role": "model", "parts": parts}


async def new_conversation(conv: Conversations) -> int:
    cid = await conv.create(GUILD, CHANNEL, OWNER, "gemini-3-pro-image-preview")
    await conv.bind_thread(cid, THREAD)
    return cid


async def add(conv: Conversations, cid: int, parent: int | None, n: int, *, with_input: bool = False):
    """Turn number n: its own distinct final/draft images (distinct sizes → distinct bytes)."""
    final = make_image(60 + n, 40)
    draft = make_image(30 + n, 20)
    u = user_turn(f"step {n}", *([make_image(20 + n, 20)] if with_input else []))
    m = model_turn(final, draft, f"sig{n}")
    turn = await conv.add_turn(cid, parent, u, m, final, "image/png", prompt=f"step {n}", settings={"size": "1K"})
    return turn, u, m, final


async def test_the_path_replays_the_exact_contents_with_signatures_and_part_order(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, u1, m1, _ = await add(env, cid, None, 1, with_input=True)
    t2, u2, m2, _ = await add(env, cid, t1.id, 2)
    t3, u3, m3, _ = await add(env, cid, t2.id, 3, with_input=True)

    history = await env.history(t3.id)
    # Compared as JSON text: same keys, same key order, same part order, same signatures.
    assert dumps(list(history)) == dumps([u1, m1, u2, m2, u3, m3])
    assert history.dropped == 0 and not history.expired

    # The database holds hashes, not base64 — and the caller's dicts were not touched.
    async with env.db.execute("SELECT user_parts, model_parts FROM turns WHERE id = ?", (t1.id,)) as cur:
        stored_user, stored_model = await cur.fetchone()
    assert '"data"' not in stored_user + stored_model
    assert json.loads(stored_model)[3] == {
        "thoughtSignature": "sig1-image",
        "inlineData": {"mimeType": "image/png", "sha256": t1.image_sha256},
    }
    assert m1["parts"][3]["inlineData"]["data"] == b64(make_image(61, 40))


async def test_history_survives_a_new_connection(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "db" / "bot.sqlite3"
    db = await store.connect(path)
    conv = Conversations(db, ImageStore(db, data_dir / "images"))
    cid = await new_conversation(conv)
    t1, u1, m1, _ = await add(conv, cid, None, 1)
    t2, u2, m2, _ = await add(conv, cid, t1.id, 2)
    await conv.set_message(t2.id, 9002)
    await db.close()

    db = await store.connect(path)
    try:
        again = Conversations(db, ImageStore(db, data_dir / "images"))
        turn = await again.turn_by_message(9002)
        assert turn is not None and turn.id == t2.id
        assert dumps(list(await again.history(turn.id))) == dumps([u1, m1, u2, m2])
    finally:
        await db.close()


async def test_snake_case_answers_are_replayed_in_camel_case_in_place(env: Conversations) -> None:
    cid = await new_conversation(env)
    final = make_image(50, 50)
    answer = {
        "role": "model",
        "parts": [
            {"text": "done", "thought_signature": "s1"},
            {"inline_data": {"mime_type": "image/png", "data": b64(final)}, "thought_signature": "s2"},
        ],
    }
    turn = await env.add_turn(cid, None, user_turn("go"), answer, final, "image/png", prompt="go")
    history = await env.history(turn.id)
    assert dumps(history[1]) == dumps(
        {
            "role": "model",
            "parts": [
                {"text": "done", "thoughtSignature": "s1"},
                {"inlineData": {"mimeType": "image/png", "data": b64(final)}, "thoughtSignature": "s2"},
            ],
        }
    )


async def test_one_picture_used_many_times_is_stored_once(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, _, _, final1 = await add(env, cid, None, 1)
    # The user sends the previous result back as an input image: no second copy.
    await env.add_turn(cid, t1.id, user_turn("again", final1), model_turn(final1, None, "x"), final1, "image/png", prompt="again")
    async with env.db.execute("SELECT COUNT(*) FROM images") as cur:
        count = (await cur.fetchone())[0]
    assert count == 2  # turn 1's final and its draft; nothing new for turn 2
    files = [p for p in env.images.root.rglob("*") if p.is_file()]
    assert len(files) == 2


async def test_two_children_of_one_turn_are_two_paths_and_latest_follows_the_newest(env: Conversations) -> None:
    cid = await new_conversation(env)
    root, u1, m1, _ = await add(env, cid, None, 1)
    left, u_left, m_left, _ = await add(env, cid, root.id, 2)
    right, u_right, m_right, _ = await add(env, cid, root.id, 3)

    path_left = await env.history(left.id)
    path_right = await env.history(right.id)
    assert dumps(list(path_left)) == dumps([u1, m1, u_left, m_left])
    assert dumps(list(path_right)) == dumps([u1, m1, u_right, m_right])

    latest = await env.latest_turn(THREAD)
    assert latest is not None and latest.id == right.id
    # Continuing the older branch makes that branch the latest.
    deeper, *_ = await add(env, cid, left.id, 4)
    latest = await env.latest_turn(THREAD)
    assert latest is not None and latest.id == deeper.id and latest.parent_id == left.id
    assert [t.id for t in await env.path(deeper.id)] == [root.id, left.id, deeper.id]
    assert await env.latest_turn(THREAD + 1) is None


async def test_messages_and_threads_lead_back_to_their_turns(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, *_ = await add(env, cid, None, 1)
    t2, *_ = await add(env, cid, t1.id, 2)
    await env.set_message(t1.id, 5001)
    await env.set_message(t2.id, 5002)

    found = await env.turn_by_message(5001)
    assert found is not None and found.id == t1.id and found.prompt == "step 1"
    assert found.settings == {"size": "1K"}
    assert (await env.turn_by_message(5002)).id == t2.id  # type: ignore[union-attr]
    assert await env.turn_by_message(5003) is None

    # The thread leads to its conversation (as a message in it does) and to its owner.
    latest = await env.latest_turn(THREAD)
    assert latest is not None and latest.conversation_id == cid
    conversation = await env.get_conversation(latest.conversation_id)
    assert conversation is not None and conversation.thread_id == THREAD and conversation.owner_id == OWNER
    assert await env.latest_turn(THREAD + 1) is None
    assert (await env.get_turn(t2.id)).parent_id == t1.id  # type: ignore[union-attr]
    assert await env.get_turn(t2.id + 100) is None

    other = await env.create(GUILD, CHANNEL, OWNER, "gemini-2.5-flash-image")
    with pytest.raises(ValueError):
        await env.bind_thread(other, THREAD)  # a thread holds one conversation
    with pytest.raises(ValueError):
        await add(env, other, t1.id, 3)  # a parent from another conversation


async def test_dialects_without_history_still_get_a_path_and_the_latest_image(env: Conversations) -> None:
    cid = await new_conversation(env)
    first = make_image(70, 70, "JPEG")
    second = make_image(72, 70, "JPEG")
    t1 = await env.add_turn(cid, None, None, None, first, "image/jpeg", prompt="a fox")
    t2 = await env.add_turn(cid, t1.id, None, None, second, "image/jpeg", prompt="make it blue")

    assert await env.latest_image(t2.id) == (second, "image/jpeg")
    history = await env.history(t2.id)
    assert list(history) == [
        {"role": "user", "parts": [{"text": "a fox"}]},
        {"role": "model", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": b64(first)}}]},
        {"role": "user", "parts": [{"text": "make it blue"}]},
        {"role": "model", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": b64(second)}}]},
    ]


async def test_thought_parts_are_kept_unless_asked_to_leave_unsigned_ones_out(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, u1, m1, _ = await add(env, cid, None, 1)
    full = await env.history(t1.id)
    assert dumps(full[1]) == dumps(m1)
    lean = await env.history(t1.id, include_thoughts=False)
    assert [p.get("thoughtSignature") for p in lean[1]["parts"]] == ["sig1-text", "sig1-image"]
    assert dumps(lean[1]["parts"]) == dumps(m1["parts"][2:])


def pair_size(history: list[dict[str, Any]], i: int) -> int:
    return sum(len(json.dumps(c, separators=(",", ":")).encode()) for c in history[2 * i : 2 * i + 2])


async def test_the_budget_drops_the_oldest_whole_exchanges_first(env: Conversations) -> None:
    cid = await new_conversation(env)
    turns = []
    parent = None
    for n in range(1, 5):
        turn, *_ = await add(env, cid, parent, n)
        turns.append(turn)
        parent = turn.id
    full = await env.history(turns[-1].id, budget_bytes=10**9)
    sizes = [pair_size(full, i) for i in range(4)]
    user_of_pair_2 = len(json.dumps(full[2], separators=(",", ":")).encode())

    # Room for the last two exchanges plus pair 2's small user message, but not its model turn:
    # the result must not start with that lone user message.
    budget = sizes[2] + sizes[3] + user_of_pair_2 + 600
    assert budget < sizes[1] + sizes[2] + sizes[3]
    trimmed = await env.history(turns[-1].id, budget_bytes=budget)
    assert trimmed.dropped == 2 and not trimmed.expired
    assert dumps(list(trimmed)) == dumps(full[4:])
    assert [c["role"] for c in trimmed] == ["user", "model", "user", "model"]
    assert sum(len(json.dumps(c, separators=(",", ":")).encode()) for c in trimmed) <= budget

    # A budget smaller than the chosen exchange itself still sends that exchange.
    tiny = await env.history(turns[-1].id, budget_bytes=100)
    assert tiny.dropped == 3
    assert dumps(list(tiny)) == dumps(full[6:])


async def test_a_pruned_turn_cannot_be_continued(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, *_ = await add(env, cid, None, 1)
    t2, *_ = await add(env, cid, t1.id, 2)
    assert await env.images.prune(30, now=time.time() + 31 * DAY) == 4  # two finals, two drafts
    with pytest.raises(ImagePruned):
        await env.history(t2.id)
    with pytest.raises(ImagePruned):
        await env.latest_image(t2.id)
    # The turn itself is still known (the bot can say "expired", not "unknown").
    assert (await env.get_turn(t2.id)) is not None


async def test_an_expired_older_exchange_is_left_out_and_the_edit_goes_on(env: Conversations) -> None:
    cid = await new_conversation(env)
    t1, *_ = await add(env, cid, None, 1)
    t2, u2, m2, _ = await add(env, cid, t1.id, 2)
    t3, u3, m3, _ = await add(env, cid, t2.id, 3)
    for sha in t1.image_refs():
        await env.db.execute("UPDATE images SET last_used = ? WHERE sha256 = ?", (time.time() - 40 * DAY, sha))
    assert await env.images.prune(30) == 2

    history = await env.history(t3.id)
    assert history.expired and history.dropped == 1
    assert dumps(list(history)) == dumps([u2, m2, u3, m3])


async def test_wrapped_or_url_safe_base64_from_a_relay_is_the_same_picture(env: Conversations) -> None:
    cid = await new_conversation(env)
    final = make_image(90, 90)
    wrapped = base64.encodebytes(final).decode()  # line breaks every 76 characters
    url_safe = base64.urlsafe_b64encode(final).decode().rstrip("=")
    answer = {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": wrapped}}]}
    user = {"role": "user", "parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": url_safe}}]}
    turn = await env.add_turn(cid, None, user, answer, final, "image/png", prompt="x")
    assert set(turn.image_refs()) == {turn.image_sha256}
    history = await env.history(turn.id)
    assert history[1]["parts"][0]["inlineData"]["data"] == b64(final)
    assert history[0]["parts"][1]["inlineData"]["data"] == b64(final)

    broken = {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": "not*base64!"}}]}
    with pytest.raises(ValueError):
        await env.add_turn(cid, None, user, broken, final, "image/png", prompt="x")


def noisy_png(width: int, height: int) -> bytes:
    """A picture PNG cannot shrink: its file is about as big as its pixels."""
    pixels = random.Random(width * height).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(out, "PNG")
    return out.getvalue()


async def test_a_big_answer_is_stored_from_its_bytes_and_replayed_byte_exact(env: Conversations) -> None:
    picture = noisy_png(700, 700)
    assert len(picture) >= BLOB_BYTES  # replayed as a Blob, not as a base64 string
    answer = dict(thoughts=2, text="Here it is.", signature="U0lHLWJpZw==")
    relay_content = json.loads(gemini_answer_body(picture, **answer))["candidates"][0]["content"]
    # Unsigned thought parts never reach the conversation (the relay client leaves them out).
    relay_content["parts"] = [p for p in relay_content["parts"] if not (p.get("thought") is True and "thoughtSignature" not in p)]
    with RelayDouble(api_key="k") as double:
        relay = RelayConfig(double.url, "gemini", "query", "k")
        async with RelayClient(max_attempts=1, timeout=20) as client:
            double.enqueue(Behaviour("raw", body=gemini_answer_body(picture, casing="snake", **answer).decode()))
            result = await client.generate(relay, GenerationRequest("a fox", model="gemini-3-pro-image-preview"))
            assert isinstance(result.model_turn["parts"][-1]["inlineData"]["data"], Blob)

            cid = await new_conversation(env)
            turn = await env.add_turn(cid, None, result.user_turn, result.model_turn, result.image, result.mime_type, prompt="a fox")
            assert turn.model_parts[-1] == {
                "inlineData": {"mimeType": "image/png", "sha256": turn.image_sha256},
                "thoughtSignature": "U0lHLWJpZw==",
            }
            assert await env.images.get(turn.image_sha256) == (picture, "image/png")

            history = await env.history(turn.id)
            assert isinstance(history[1]["parts"][-1]["inlineData"]["data"], Blob)
            # The relay's parts as it sent them, in camelCase (turns are stored as role + parts).
            assert history[1]["role"] == relay_content["role"]
            assert dumps(materialize(history[1]["parts"])) == dumps(relay_content["parts"])

            await client.generate(relay, GenerationRequest("bluer", model="gemini-3-pro-image-preview", history=list(history)))
            seen = double.requests[-1]
            assert dumps(seen.json["contents"][1]["parts"]) == dumps(relay_content["parts"])
            assert b'"data":"' + b64(picture).encode() + b'"' in seen.body


async def test_a_big_picture_inside_a_text_part_is_stored_as_that_text(env: Conversations) -> None:
    # Some relays answer with a markdown data URL in a text part; it is kept as the text it is.
    picture = noisy_png(300, 300)
    body = gemini_answer_body(picture, markdown=True, text="Done.")
    relay_content = json.loads(body)["candidates"][0]["content"]
    with RelayDouble(api_key="k") as double:
        async with RelayClient(max_attempts=1, timeout=20) as client:
            double.enqueue(Behaviour("raw", body=body.decode()))
            result = await client.generate(
                RelayConfig(double.url, "gemini", "query", "k"), GenerationRequest("a fox", model="gemini-3-pro-image-preview")
            )
    assert result.image == picture
    assert any(isinstance(p.get("text"), Blob) for p in result.model_turn["parts"])
    turn = await env.add_turn(
        await new_conversation(env), None, result.user_turn, result.model_turn, result.image, result.mime_type, prompt="a fox"
    )
    history = await env.history(turn.id)
    assert dumps(history[1]["parts"]) == dumps(relay_content["parts"])


# --- bounded storage: only what a later turn needs ------------------------------------------


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]


async def test_sixty_one_image_parts_store_only_the_delivered_picture_and_what_the_replay_needs(env: Conversations) -> None:
    pictures = [make_image(64, 48, color=(i * 4, 255 - i * 4, 7)) for i in range(61)]
    assert len(set(pictures)) == 61
    final = pictures[-1]
    parts: list[dict[str, Any]] = [{"inlineData": {"mimeType": "image/png", "data": b64(p)}} for p in pictures[:-1]]
    parts.append({"text": "x" * 100_000})  # an unsigned flood of text
    parts.append({"thoughtSignature": "sig-final", "inlineData": {"mimeType": "image/png", "data": b64(final)}})
    conv = await env.create(GUILD, CHANNEL, OWNER, "gemini-3-pro-image-preview")
    turn = await env.add_turn(conv, None, user_turn("go"), {"role": "model", "parts": parts}, final, "image/png", prompt="go")
    files = stored_files(env.images.root)
    assert len(files) == 1 and files[0].read_bytes() == final  # not 61 files
    # The replay is still exact for what it carries: the signed final picture, whole.
    history = await env.history(turn.id)
    sent = materialize(history[1])
    assert sent["parts"] == [{"thoughtSignature": "sig-final", "inlineData": {"mimeType": "image/png", "data": b64(final)}}]


async def test_too_many_signed_images_are_stored_as_the_delivered_picture_alone(env: Conversations) -> None:
    pictures = [make_image(64, 48, color=(i * 20, 9, 9)) for i in range(8)]
    assert len(set(pictures)) == 8
    parts = [{"thoughtSignature": f"sig-{i}", "inlineData": {"mimeType": "image/png", "data": b64(p)}} for i, p in enumerate(pictures)]
    conv = await env.create(GUILD, CHANNEL, OWNER, "gemini-3-pro-image-preview")
    turn = await env.add_turn(conv, None, user_turn("go"), {"role": "model", "parts": parts}, pictures[-1], "image/png", prompt="go")
    assert len(stored_files(env.images.root)) == 1
    assert turn.model_parts == [{"inlineData": {"mimeType": "image/png", "sha256": turn.image_sha256}}]
    data, _ = await env.latest_image(turn.id)
    assert data == pictures[-1]


async def test_a_server_over_its_storage_cap_loses_its_least_recently_used_pictures_first(env: Conversations) -> None:
    pictures = [make_image(64, 48, color=(i * 30, 40, 50)) for i in range(4)]
    other = make_image(64, 48, color=(1, 250, 1))
    size = len(pictures[0])
    turns = []
    conv = await env.create(GUILD, CHANNEL, OWNER, "gemini-3.1-flash-image-preview")
    for i, picture in enumerate(pictures):
        turns.append(await env.add_turn(conv, turns[-1].id if turns else None, None, None, picture, "image/png", prompt=f"p{i}"))
        await env.images.db.execute("UPDATE images SET last_used = ? WHERE sha256 = ?", (1000.0 + i, turns[-1].image_sha256))
    await env.images.db.commit()
    elsewhere = await env.create(GUILD + 1, CHANNEL, OWNER, "gemini-3.1-flash-image-preview")
    kept_elsewhere = await env.add_turn(elsewhere, None, None, None, other, "image/png", prompt="x")
    await env.images.db.execute("UPDATE images SET last_used = 1 WHERE sha256 = ?", (kept_elsewhere.image_sha256,))
    await env.images.db.commit()
    limit = 2 * max(len(p) for p in pictures) + size // 2  # room for two of the four
    assert await env.prune_server_overflow(limit) == 2
    pruned = [(await env.images.info(t.image_sha256)).pruned for t in turns]
    assert pruned == [True, True, False, False]  # the two used longest ago
    assert not (await env.images.info(kept_elsewhere.image_sha256)).pruned  # another server's: untouched
    with pytest.raises(ImagePruned):
        await env.history(turns[0].id)
    assert await env.history(turns[-1].id)  # the newest still edits
