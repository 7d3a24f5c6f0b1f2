"""Styles: saved in a real SQLite file with real pictures in the content-addressed store,
applied to prompts without ever reading the member's text as a format string."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import store
from bot.i18n import t
from bot.image_store import ImageStore
from bot.relay.catalogue import MAX_PROMPT_CHARS
from bot.relay.types import InputImage
from bot.styles import MAX_PERSONAL_STYLES, MAX_SERVER_STYLES, SERVER, Style, StyleError, StyleStore
from tests.conftest import make_image

GUILD, ADMIN, MEMBER, OTHER = 1, 2, 3, 4
INK = "{prompt}, ink wash painting, loose brush strokes"


@pytest.fixture
async def styles(tmp_path: Path, data_dir: Path):
    db = await store.connect(tmp_path / "bot.sqlite3")
    try:
        yield StyleStore(db, ImageStore(db, data_dir / "images"))
    finally:
        await db.close()


def png(width: int) -> InputImage:
    return InputImage(make_image(width, 32), "image/png")


def refused(exc: pytest.ExceptionInfo[StyleError], key: str) -> None:
    assert exc.value.key == key
    for locale in ("en", "zh-CN"):
        text = t(key, locale, **exc.value.params)
        assert text != key and "{" not in text.replace("{prompt}", ""), text


async def test_a_server_style_reaches_the_prompt_with_its_pictures_and_shape(styles: StyleStore) -> None:
    ref = png(40)
    await styles.save(GUILD, "Ink", INK, created_by=ADMIN, images=[ref], aspect_ratio="3x4", size="2k")
    style = await styles.resolve(GUILD, MEMBER, "  ink ")
    assert style.apply("a heron") == "a heron, ink wash painting, loose brush strokes"
    assert (style.aspect_ratio, style.size, style.personal) == ("3:4", "2K", False)
    pictures = await styles.reference_images(style)
    assert [p.data for p in pictures] == [ref.data]


def test_the_members_prompt_is_never_read_as_a_format_string() -> None:
    style = Style(GUILD, SERVER, "Braces", "{{literal}} {prompt} {0}")
    assert style.apply("{prompt} {0} {__class__} {x!r:>99}") == "{{literal}} {prompt} {0} {__class__} {x!r:>99} {0}"


async def test_a_deleted_style_gives_a_translated_refusal(styles: StyleStore) -> None:
    await styles.save(GUILD, "Ink", INK, created_by=ADMIN)
    assert await styles.remove(GUILD, "INK") is True
    with pytest.raises(StyleError) as caught:
        await styles.resolve(GUILD, MEMBER, "Ink")
    refused(caught, "style.gone")
    assert "Ink" in t("style.gone", "zh-CN", **caught.value.params)
    assert await styles.remove(GUILD, "Ink") is False


async def test_a_personal_style_shadows_the_servers_of_that_name_for_its_owner_only(styles: StyleStore) -> None:
    await styles.save(GUILD, "Ink", INK, created_by=ADMIN)
    await styles.save(GUILD, "ink", "{prompt} in my own ink", created_by=MEMBER, owner_id=MEMBER)
    assert (await styles.resolve(GUILD, MEMBER, "Ink")).apply("x") == "x in my own ink"
    assert (await styles.resolve(GUILD, OTHER, "Ink")).apply("x") == INK.replace("{prompt}", "x")
    listed = await styles.autocomplete(GUILD, MEMBER, "in")
    assert [(s.name, s.personal) for s in listed] == [("ink", True)]
    with pytest.raises(StyleError):
        await styles.resolve(GUILD + 1, MEMBER, "Ink")  # another server does not see it


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("ink wash painting", "style.bad_template"),
        ("{prompt} and again {prompt}", "style.bad_template"),
        ("{prompt}" + "x" * 1000, "style.template_too_long"),
    ],
)
async def test_a_template_needs_its_placeholder_once_and_a_bounded_length(styles: StyleStore, template: str, key: str) -> None:
    with pytest.raises(StyleError) as caught:
        await styles.save(GUILD, "Bad", template, created_by=ADMIN)
    refused(caught, key)
    assert await styles.visible(GUILD, MEMBER) == []


@pytest.mark.parametrize("name", ["", " ", "x" * 33, "ink<script>", "a/b", "@everyone"])
async def test_names_are_letters_digits_and_a_few_marks(styles: StyleStore, name: str) -> None:
    with pytest.raises(StyleError) as caught:
        await styles.save(GUILD, name, INK, created_by=ADMIN)
    refused(caught, "style.bad_name")


async def test_chinese_names_are_fine_and_spaces_are_tidied(styles: StyleStore) -> None:
    saved = await styles.save(GUILD, "  水墨   画 ", INK, created_by=ADMIN)
    assert saved.name == "水墨 画"
    assert (await styles.resolve(GUILD, MEMBER, "水墨 画")).name == "水墨 画"


async def test_a_styled_prompt_over_the_models_limit_is_refused(styles: StyleStore) -> None:
    style = await styles.save(GUILD, "Ink", INK, created_by=ADMIN)
    with pytest.raises(StyleError) as caught:
        style.apply("x" * MAX_PROMPT_CHARS)
    refused(caught, "style.too_long")


async def test_style_pictures_count_against_the_models_input_limit(styles: StyleStore) -> None:
    style = await styles.save(GUILD, "Refs", INK, created_by=ADMIN, images=[png(30), png(31)])
    style.check_images("gemini-3-pro-image-preview", 4)  # 6 of 14: fine
    with pytest.raises(StyleError) as caught:
        style.check_images("gemini-2.5-flash-image", 2)  # 4 of 3
    refused(caught, "style.too_many_images")


async def test_limits_per_server_and_per_member_but_replacing_is_always_allowed(styles: StyleStore) -> None:
    for i in range(MAX_PERSONAL_STYLES):
        await styles.save(GUILD, f"mine {i}", INK, created_by=MEMBER, owner_id=MEMBER)
    with pytest.raises(StyleError) as caught:
        await styles.save(GUILD, "one more", INK, created_by=MEMBER, owner_id=MEMBER)
    refused(caught, "style.limit")
    await styles.save(GUILD, "MINE 0", "{prompt}, replaced", created_by=MEMBER, owner_id=MEMBER)
    assert (await styles.resolve(GUILD, MEMBER, "mine 0")).template == "{prompt}, replaced"
    for i in range(MAX_SERVER_STYLES):
        await styles.save(GUILD, f"server {i}", INK, created_by=ADMIN)  # the member's count is not the server's
    with pytest.raises(StyleError):
        await styles.save(GUILD, "server extra", INK, created_by=ADMIN)


async def test_save_as_style_from_a_result_keeps_its_picture_and_a_usable_template(styles: StyleStore) -> None:
    picture = png(50)
    style = await styles.save_from_result(GUILD, MEMBER, "Dusk", "a {prompt} city at dusk, {weird}", picture)
    assert style.personal and style.template.count("{prompt}") == 1
    applied = style.apply("a fox")
    assert applied.startswith("a fox") and "city at dusk" in applied
    assert [p.data for p in await styles.reference_images(style)] == [picture.data]


async def test_style_pictures_survive_pruning_and_a_pruned_one_is_explained(styles: StyleStore) -> None:
    style = await styles.save(GUILD, "Refs", INK, created_by=ADMIN, images=[png(30)])
    refs = list(style.images)
    await styles.images.touch(refs, now=0)  # unused for decades; no turn or job refers to it
    assert await styles.keep_images() == 1  # the prune loop's first step
    assert await styles.images.prune_orphans() == 0
    assert await styles.images.prune(30) == 0
    assert len(await styles.reference_images(style)) == 1
    assert await styles.image_refs(style) == refs  # what a job's request carries
    await styles.images.touch(refs, now=0)  # without keep_images, the orphan pruner takes it
    assert await styles.images.prune_orphans() == 1
    for read in (styles.reference_images, styles.image_refs):
        with pytest.raises(StyleError) as caught:
            await read(style)
        refused(caught, "style.images_gone")
