"""``python -m bot generate`` run as a real subprocess against the relay double.

Every run is checked for the contract's invariants: no traceback, the key nowhere in the
output, and (with --json) one JSON object as the last stdout line.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble

KEY = "sk-cli-test-key-9876543210fedcba"
PRO = "gemini-3-pro-image-preview"
FLASH25 = "gemini-2.5-flash-image"
SMALL = {"width": 64, "height": 48}
ROOT = Path(__file__).resolve().parent.parent


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def last_json(self) -> dict[str, Any]:
        lines = [line for line in self.out.splitlines() if line.strip()]
        assert lines, f"no stdout; stderr: {self.err}"
        return json.loads(lines[-1])


def cli(
    *args: str,
    cwd: Path,
    relay: RelayDouble | None = None,
    fmt: str | None = None,
    auth: str | None = None,
    key: str | None = KEY,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> Run:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    environ.update(
        {
            "NB_ENV_FILE": os.devnull,
            "NB_RETRY_BACKOFF": "0.01",
            "NB_RETRY_MAX_BACKOFF": "0.05",
            "NB_LOCALE": "en",
            "PYTHONPATH": str(ROOT),
        }
    )
    if relay is not None:
        environ["NB_RELAY_URL"] = relay.url
    if fmt:
        environ["NB_RELAY_FORMAT"] = fmt
    if auth:
        environ["NB_RELAY_AUTH"] = auth
    if key is not None:
        environ["NB_API_KEY"] = key
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "generate", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    run = Run(proc)
    assert "Traceback" not in run.err, run.err
    assert KEY not in run.out + run.err and KEY[3:] not in run.out + run.err
    return run


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- success: every format x auth style -----------------------------------------------------


@pytest.mark.parametrize("auth", ["query", "bearer", "x-goog-api-key"])
@pytest.mark.parametrize("fmt", ["gemini", "openai-images", "openai-chat"])
def test_every_format_and_auth_style_writes_the_picture(double, tmp_path, fmt, auth) -> None:
    run = cli("a red fox", "--model", PRO, "--json", cwd=tmp_path, relay=double, fmt=fmt, auth=auth)
    assert run.code == 0, run.err
    result = run.last_json
    path = Path(result["path"])
    assert path.parent == tmp_path and path.suffix == ".png"
    assert path.read_bytes() == double.images_served[-1]
    assert (result["mime_type"], result["width"], result["height"], result["model"]) == ("image/png", 64, 48, PRO)
    assert result["elapsed_s"] >= 0 and result["text"] == "" and result["usage"]["total_tokens"] > 0
    seen = double.requests[-1]
    assert (seen.dialect, seen.auth_style, seen.key_ok) == (fmt, auth, True)


def test_plain_run_prints_the_path_and_names_the_file_for_its_type(double, tmp_path) -> None:
    double.enqueue(Behaviour("image", mime="image/jpeg", **SMALL))
    run = cli("a fox", cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    written = Path(run.out.strip().splitlines()[-1])
    assert written.suffix == ".jpg" and written.parent.resolve() == tmp_path.resolve()
    assert written.read_bytes() == double.images_served[-1]
    assert "Saved" in run.err
    # Nano Banana 2 is the Gemini format's default model.
    assert double.requests[-1].path == "/v1beta/models/gemini-3.1-flash-image-preview:generateContent"


def test_out_file_folder_and_new_folders(double, tmp_path) -> None:
    run = cli("a fox", "--out", "nested/dir/fox.png", "--json", cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    assert (tmp_path / "nested/dir/fox.png").read_bytes() == double.images_served[-1]
    (tmp_path / "pics").mkdir()
    run = cli("a fox", "--out", "pics", "--json", cwd=tmp_path, relay=double)
    assert run.code == 0 and Path(run.last_json["path"]).parent == tmp_path / "pics"
    double.enqueue(Behaviour("image", mime="image/jpeg", **SMALL))
    run = cli("a fox", "--out", "fox.png", cwd=tmp_path, relay=double)
    assert run.code == 0 and "image/jpeg" in run.err  # written as asked, and said so
    assert (tmp_path / "fox.png").read_bytes()[:3] == b"\xff\xd8\xff"


def test_options_reach_the_relay_in_its_own_form(double, tmp_path) -> None:
    run = cli(
        "a fox",
        "--model",
        "nano-banana-2",
        "--aspect-ratio",
        "1:8",
        "--size",
        "512px",
        "--thinking",
        "high",
        "--grounding",
        cwd=tmp_path,
        relay=double,
    )
    assert run.code == 0, run.err
    config = double.requests[-1].json["generationConfig"]
    assert config["imageConfig"] == {"aspectRatio": "1:8", "imageSize": "512"}
    assert config["thinkingConfig"]["thinkingLevel"] == "HIGH"
    run = cli(
        "a fox", "--model", PRO, "--aspect-ratio", "2:3", "--size", "4k", cwd=tmp_path, relay=double, fmt="openai-images", auth="bearer"
    )
    assert run.code == 0, run.err
    body = double.requests[-1].json
    assert (body["size"], body["aspect_ratio"]) == ("4k", "2:3")


def test_flags_override_the_environment(double, tmp_path) -> None:
    run = cli(
        "a fox",
        "--relay-url",
        double.url,
        "--format",
        "openai-chat",
        "--auth",
        "x-goog-api-key",
        cwd=tmp_path,
        key=KEY,
        env={"NB_RELAY_URL": "http://127.0.0.1:9", "NB_RELAY_FORMAT": "gemini", "NB_RELAY_AUTH": "query"},
    )
    assert run.code == 0, run.err
    assert (double.requests[-1].dialect, double.requests[-1].auth_style) == ("openai-chat", "x-goog-api-key")


def test_prompt_from_standard_input(double, tmp_path) -> None:
    run = cli("-", cwd=tmp_path, relay=double, stdin="a fox from stdin\n")
    assert run.code == 0, run.err
    assert double.requests[-1].json["contents"][-1]["parts"][0]["text"] == "a fox from stdin"


# --- input pictures -------------------------------------------------------------------------


def test_input_pictures_are_identified_by_content(double, tmp_path) -> None:
    bmp = io.BytesIO()
    Image.new("RGB", (30, 20), (9, 9, 9)).save(bmp, "BMP")
    misnamed = write(tmp_path / "looks-like.jpg", bmp.getvalue())
    jpeg = write(tmp_path / "photo.png", make_image(24, 24, "JPEG"))
    run = cli("merge", "--model", PRO, "--image", str(misnamed), "--image", str(jpeg), cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    parts = double.requests[-1].json["contents"][-1]["parts"]
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/jpeg"]
    assert base64.b64decode(parts[2]["inlineData"]["data"]) == jpeg.read_bytes()


def test_edit_through_openai_images_uploads_the_file(double, tmp_path) -> None:
    picture = write(tmp_path / "in.png", make_image(40, 30))
    run = cli("add a hat", "--model", PRO, "--image", str(picture), cwd=tmp_path, relay=double, fmt="openai-images", auth="bearer")
    assert run.code == 0, run.err
    assert [(u.name, u.data) for u in double.requests[-1].uploads] == [("image", picture.read_bytes())]


# --- exit 2: invalid input, nothing sent ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["a fox", "--size", "3K"], "does not take the size"),
        (["a fox", "--model", FLASH25, "--size", "2K"], "takes no size"),
        (["a fox", "--model", PRO, "--size", "512px"], "Allowed: 1K, 2K, 4K"),
        (["a fox", "--aspect-ratio", "7:3"], "does not take the aspect ratio"),
        (["a fox", "--model", "dall-e-3"], "Unknown model"),
        (["  "], "prompt is empty"),
        (["a fox", "--model", PRO, "--thinking", "high"], "no thinking option"),
        (["a fox", "--model", FLASH25, "--grounding"], "cannot use Google Search"),
        (["a fox", "--format", "openai"], "invalid choice"),
        (["a fox", "--no-such-flag"], "unrecognized arguments"),
        ([], "required"),
    ],
)
def test_invalid_options_exit_2_without_sending(double, tmp_path, args, needle) -> None:
    run = cli(*args, "--json", cwd=tmp_path, relay=double)
    assert run.code == 2, run.err
    assert needle in run.err
    assert run.last_json["ok"] is False and run.last_json["exit_code"] == 2
    assert double.requests == []


def test_bad_input_files_exit_2_without_sending(double, tmp_path) -> None:
    text = write(tmp_path / "cat.png", b"this is not a picture at all")
    run = cli("edit", "--image", str(text), cwd=tmp_path, relay=double)
    assert (run.code, "is not a picture" in run.err, str(text) in run.err) == (2, True, True)
    run = cli("edit", "--image", str(tmp_path / "missing.png"), cwd=tmp_path, relay=double)
    assert run.code == 2 and "Cannot read" in run.err
    pictures = [str(write(tmp_path / f"p{i}.png", make_image(10, 10))) for i in range(4)]
    run = cli("edit", "--model", FLASH25, *[x for p in pictures for x in ("--image", p)], cwd=tmp_path, relay=double)
    assert run.code == 2 and "at most 3" in run.err
    assert double.requests == []


@pytest.mark.parametrize(
    ("env", "key", "needle"),
    [
        ({"NB_RELAY_URL": ""}, KEY, "NB_RELAY_URL"),
        ({}, None, "NB_API_KEY"),
        ({"NB_RELAY_FORMAT": "claude"}, KEY, "NB_RELAY_FORMAT"),
        ({"NB_RELAY_AUTH": "cookie"}, KEY, "NB_RELAY_AUTH"),
        ({"NB_RELAY_URL": "ftp://relay.example"}, KEY, "http(s) URL"),
        ({"NB_RETRY_ATTEMPTS": "many"}, KEY, "NB_RETRY_ATTEMPTS"),
    ],
)
def test_configuration_problems_exit_2_with_one_line(double, tmp_path, env, key, needle) -> None:
    run = cli("a fox", cwd=tmp_path, relay=double, key=key, env=env)
    assert run.code == 2, run.err
    assert needle in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert double.requests == []


def test_unwritable_output_exits_2_before_sending(double, tmp_path) -> None:
    blocker = write(tmp_path / "file", b"x")
    run = cli("a fox", "--out", str(blocker / "sub" / "fox.png"), cwd=tmp_path, relay=double)
    assert run.code == 2 and "not a folder" in run.err
    assert double.requests == []


# --- exit 3: answered without a picture -----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "behaviour", "needles"),
    [
        (
            "gemini",
            Behaviour("blocked", reason="PROHIBITED_CONTENT", message="This prompt is not allowed."),
            ["blocked", "PROHIBITED_CONTENT", "This prompt is not allowed."],
        ),
        ("gemini", Behaviour("finish", reason="IMAGE_SAFETY"), ["safety filter", "IMAGE_SAFETY", "Prohibited Use policy"]),
        ("gemini", Behaviour("finish", reason="NO_IMAGE"), ["made none", "Unable to generate an image"]),
        ("gemini", Behaviour("finish", reason="RECITATION"), ["protected content", "RECITATION"]),
        ("gemini", Behaviour("text_only", text="I'd rather not draw that."), ["text only", "I'd rather not draw that."]),
        ("openai-chat", Behaviour("blocked"), ["safety filter", "content policy"]),
        ("openai-chat", Behaviour("text_only", text="Here is a poem instead."), ["text only", "Here is a poem instead."]),
        ("openai-images", Behaviour("blocked"), ["blocked", "safety system"]),
        ("openai-images", Behaviour("finish"), ["made none"]),
    ],
)
def test_no_picture_exits_3_with_reason_and_the_models_words(double, tmp_path, fmt, behaviour, needles) -> None:
    double.enqueue(behaviour)
    run = cli("something", "--model", PRO, "--json", cwd=tmp_path, relay=double, fmt=fmt, auth="bearer")
    assert run.code == 3, run.err
    for needle in needles:
        assert needle in run.err, (needle, run.err)
    result = run.last_json
    assert (result["ok"], result["exit_code"]) == (False, 3)
    assert result["reason"] in ("blocked", "safety", "recitation", "no_image", "text_only")
    assert len(double.requests) == 1  # an answer is an answer: not retried
    assert not list(tmp_path.glob("nano-banana-*"))


# --- exit 4: the relay failed ---------------------------------------------------------------


def test_relay_failure_after_retries_exits_4_with_status_and_message(double, tmp_path) -> None:
    double.default = Behaviour("error", status=503, message="The model is overloaded. Please try again later.")
    run = cli("a fox", "--json", cwd=tmp_path, relay=double)
    assert run.code == 4, run.err
    assert "HTTP 503" in run.err and "The model is overloaded" in run.err and "4 attempts" in run.err
    assert (run.last_json["status"], run.last_json["exit_code"]) == (503, 4)
    assert len(double.requests) == 4


@pytest.mark.parametrize("fmt", ["gemini", "openai-chat"])
def test_wrong_key_exits_4_without_retrying_or_showing_it(double, tmp_path, fmt) -> None:
    wrong = "sk-this-is-the-wrong-key-0000000"
    run = cli("a fox", cwd=tmp_path, relay=double, fmt=fmt, auth="query", key=wrong)
    assert run.code == 4, run.err
    assert ("HTTP 400" if fmt == "gemini" else "HTTP 401") in run.err
    assert "API key" in run.err
    assert wrong not in run.err + run.out and wrong[3:] not in run.err + run.out
    assert len(double.requests) == 1


def test_key_echoed_by_the_relay_is_redacted(double, tmp_path) -> None:
    double.enqueue(Behaviour("error", status=403, message=f"key {KEY} has no access to this model"))
    run = cli("a fox", cwd=tmp_path, relay=double, auth="query", env={"NB_LOG_LEVEL": "DEBUG"})
    assert run.code == 4 and "has no access" in run.err and "***" in run.err  # cli() checks the key is absent


def test_redirect_to_an_address_with_the_key_is_shown_masked_and_whole(double, tmp_path) -> None:
    double.enqueue(Behaviour("raw", status=307, body="", headers={"Location": f"/moved/v1beta?key={KEY}"}))
    run = cli("a fox", cwd=tmp_path, relay=double, auth="query")
    assert run.code == 4, run.err
    # The masking stops at the ")" closing the quoted address instead of swallowing it.
    assert "(redirect to /moved/v1beta?key=***). Use the final address" in run.err


@pytest.mark.parametrize(
    ("behaviours", "needle"),
    [
        ([Behaviour("error", status=502, body="html")] * 4, "502 Bad Gateway"),
        ([Behaviour("disconnect")] * 4, "Could not reach the relay"),
        ([Behaviour("truncated", **SMALL)] * 4, "broken"),
        ([Behaviour("raw", body="<html>maintenance</html>", content_type="text/html")] * 4, "broken"),
    ],
)
def test_faults_exit_4_after_retries(double, tmp_path, behaviours, needle) -> None:
    double.enqueue(*behaviours)
    run = cli("a fox", cwd=tmp_path, relay=double)
    assert run.code == 4, run.err
    assert needle in run.err
    assert len(double.requests) == 4


@pytest.mark.parametrize("behaviour", [Behaviour("hang"), Behaviour("slow", delay=10, **SMALL)])
def test_timeout_exits_4_without_retrying(double, tmp_path, behaviour) -> None:
    double.enqueue(behaviour)
    run = cli("a fox", cwd=tmp_path, relay=double, env={"NB_RELAY_TIMEOUT": "1"})
    assert run.code == 4, run.err
    assert "did not answer in time" in run.err
    assert len(double.requests) == 1


def test_unreachable_relay_exits_4(tmp_path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    run = cli("a fox", cwd=tmp_path, env={"NB_RELAY_URL": f"http://127.0.0.1:{port}"})
    assert run.code == 4 and "Could not reach the relay" in run.err


# --- retries and answer variants through the CLI --------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour("error", status=429, retry_after=1),
        Behaviour("error", status=500, body="google_list"),
        Behaviour("truncated", **SMALL),
        Behaviour("disconnect"),
    ],
)
def test_transient_faults_are_retried_to_success(double, tmp_path, behaviour) -> None:
    double.enqueue(behaviour)
    run = cli("a fox", "--json", cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    assert Path(run.last_json["path"]).read_bytes() == double.images_served[-1]
    assert len(double.requests) == 2
    assert "retrying" in run.err


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("gemini", {"thoughts": 3, "casing": "snake"}),
        ("gemini", {"markdown": True, "escaped_slashes": True}),
        ("gemini", {"casing": "mixed", "mime": "image/jpeg"}),
        ("gemini", {"huge": True, "width": 2600, "height": 2600}),
        ("openai-images", {"url": True}),
        ("openai-chat", {"chat_images_field": True}),
        ("openai-chat", {"escaped_slashes": True}),
    ],
)
def test_answer_variants_through_the_cli(double, tmp_path, fmt, options) -> None:
    double.enqueue(Behaviour("image", **{**SMALL, **options}))
    run = cli("a fox", "--model", PRO, "--json", cwd=tmp_path, relay=double, fmt=fmt, auth="bearer")
    assert run.code == 0, run.err
    assert Path(run.last_json["path"]).read_bytes() == double.images_served[-1]
    assert run.last_json["mime_type"] == options.get("mime", "image/png")


def test_model_text_and_sources_are_shown(double, tmp_path) -> None:
    double.enqueue(Behaviour("image", text="Sunny, 21°C.", grounding=True, **SMALL))
    run = cli("weather in Paris", "--model", PRO, "--grounding", "--json", cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    assert "The model said: Sunny, 21°C." in run.err
    assert "weather.gov" in run.err and "grounding-api-redirect" in run.err
    result = run.last_json
    assert result["text"] == "Sunny, 21°C."
    assert [s["title"] for s in result["sources"]] == ["weather.gov", "example.org"]


# --- sessions -------------------------------------------------------------------------------


# A big picture reaches the CLI as a Blob (decoded while it streamed in): the session file must
# still hold the base64 the relay sent.
@pytest.mark.parametrize("picture", [SMALL, {"huge": True, "width": 420, "height": 420}], ids=["small", "big"])
def test_gemini_session_continues_with_exact_turns(double, tmp_path, picture) -> None:
    session = tmp_path / "fox.json"
    double.enqueue(Behaviour("image", thoughts=2, signature="U0lHLW9uZQ==", casing="snake", **picture))
    first = cli("a red fox", "--model", PRO, "--session", str(session), "--json", cwd=tmp_path, relay=double)
    assert first.code == 0, first.err
    saved = json.loads(session.read_text())
    assert [t["role"] for t in saved["turns"]] == ["user", "model"]
    model_turn = saved["turns"][1]
    assert model_turn["parts"][-1]["thoughtSignature"] == "U0lHLW9uZQ=="
    assert base64.b64decode(model_turn["parts"][-1]["inlineData"]["data"]) == double.images_served[-1]

    second = cli("now make it blue", "--session", str(session), "--json", cwd=tmp_path, relay=double)  # model from the session
    assert second.code == 0, second.err
    assert second.last_json["continued"] is True
    seen = double.requests[-1]
    assert seen.path == f"/v1beta/models/{PRO}:generateContent"
    contents = seen.json["contents"]
    assert contents[:2] == saved["turns"]  # sent back exactly, signatures and thoughts included
    assert contents[2] == {"role": "user", "parts": [{"text": "now make it blue"}]}
    assert len(json.loads(session.read_text())["turns"]) == 4


def test_a_session_follow_up_keeps_the_pictures_size_and_ratio_unless_told(double, tmp_path) -> None:
    session = tmp_path / "poster.json"
    double.enqueue(Behaviour("image", **SMALL))
    first = cli("a poster", "--model", PRO, "--size", "2k", "--aspect-ratio", "3:4", "--session", str(session), cwd=tmp_path, relay=double)
    assert first.code == 0, first.err
    double.enqueue(Behaviour("image", **SMALL))
    second = cli("bigger title", "--session", str(session), cwd=tmp_path, relay=double)
    assert second.code == 0, second.err
    config = double.requests[-1].json["generationConfig"]["imageConfig"]
    assert (config["imageSize"], config["aspectRatio"]) == ("2K", "3:4")
    double.enqueue(Behaviour("image", **SMALL))
    third = cli("now square", "--session", str(session), "--aspect-ratio", "1:1", cwd=tmp_path, relay=double)
    assert third.code == 0, third.err
    config = double.requests[-1].json["generationConfig"]["imageConfig"]
    assert (config["imageSize"], config["aspectRatio"]) == ("2K", "1:1")


# Found against an independent relay double: a relay that MIME-wraps base64 (76-character
# lines) got its own line breaks back in the session's history and refused them
# ("Base64 decoding failed"), so the second turn failed.
def test_session_after_a_line_wrapped_answer_sends_plain_base64(double, tmp_path) -> None:
    session = tmp_path / "s.json"
    picture = make_image(150, 100, "PNG", (10, 200, 30))
    wrapped = base64.encodebytes(picture).decode()
    part = {"inline_data": {"mime_type": "image/png", "data": wrapped}, "thoughtSignature": "c2lnLTE="}
    double.enqueue(Behaviour("raw", body=json.dumps({"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]})))
    first = cli("a fox", "--model", PRO, "--session", str(session), "--json", cwd=tmp_path, relay=double)
    assert first.code == 0, first.err
    assert Path(first.last_json["path"]).read_bytes() == picture
    second = cli("make it blue", "--session", str(session), cwd=tmp_path, relay=double)
    assert second.code == 0, second.err
    model_turn = double.requests[-1].json["contents"][1]
    assert model_turn == {
        "role": "model",
        "parts": [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(picture).decode()}, "thoughtSignature": "c2lnLTE="}],
    }


def test_line_wrapped_data_url_in_a_chat_answer_writes_the_whole_picture(double, tmp_path) -> None:
    picture = make_image(150, 100, "PNG", (10, 200, 30))
    content = f"好的\n\n![image](data:image/png;base64,{base64.encodebytes(picture).decode()})"
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(answer)))
    run = cli("a fox", "--json", cwd=tmp_path, relay=double, fmt="openai-chat", auth="bearer")
    assert run.code == 0, run.err
    assert Path(run.last_json["path"]).read_bytes() == picture  # not the first line's 57 bytes
    assert (run.last_json["width"], run.last_json["height"], run.last_json["text"]) == (150, 100, "好的")


def test_a_picture_cut_short_is_not_written_as_a_success(double, tmp_path) -> None:
    whole = make_image(150, 100, "PNG", (10, 200, 30))
    cut = {
        "candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(whole[:300]).decode()}}]}}]
    }
    double.enqueue(*[Behaviour("raw", body=json.dumps(cut))] * 4)
    run = cli("a fox", "--json", cwd=tmp_path, relay=double)
    assert run.code == 4, run.err
    assert "cut short" in run.err and not list(tmp_path.glob("nano-banana-*"))


def test_more_than_six_pictures_for_openai_images_exit_2_without_sending(double, tmp_path) -> None:
    ref = write(tmp_path / "ref.png", make_image(40, 30, "PNG"))
    run = cli("merge", "--json", *["--image", str(ref)] * 7, cwd=tmp_path, relay=double, fmt="openai-images", auth="bearer")
    assert run.code == 2, run.err
    assert "at most 6 input pictures" in run.err and run.last_json["exit_code"] == 2
    assert double.requests == []


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-images"])
def test_session_without_multi_turn_sends_the_latest_picture(double, tmp_path, fmt) -> None:
    session = tmp_path / "s.json"
    first = cli("a red fox", "--model", PRO, "--session", str(session), cwd=tmp_path, relay=double, fmt=fmt, auth="bearer")
    assert first.code == 0, first.err
    made = double.images_served[-1]
    second = cli("make it night", "--session", str(session), cwd=tmp_path, relay=double, fmt=fmt, auth="bearer")
    assert second.code == 0, second.err
    seen = double.requests[-1]
    if fmt == "openai-chat":
        content = seen.json["messages"][0]["content"]
        assert content[0]["text"] == "make it night"
        assert base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1]) == made
    else:
        assert [(u.name, u.data) for u in seen.uploads] == [("image", made)]


def test_damaged_session_file_exits_2(double, tmp_path) -> None:
    session = write(tmp_path / "s.json", b"{not json")
    run = cli("a fox", "--session", str(session), cwd=tmp_path, relay=double)
    assert run.code == 2 and "session file" in run.err
    assert double.requests == []


# --- language -------------------------------------------------------------------------------


def test_messages_follow_the_locale(double, tmp_path) -> None:
    double.enqueue(Behaviour("finish", reason="IMAGE_SAFETY"))
    run = cli("x", cwd=tmp_path, relay=double, env={"NB_LOCALE": "", "LANG": "zh_CN.UTF-8"})
    assert run.code == 3
    assert "安全过滤器" in run.err and "模型说" in run.err


def test_help_exits_0(tmp_path) -> None:
    run = cli("--help", cwd=tmp_path)
    assert run.code == 0 and "Exit codes" in run.out


# --- hostile relays (README "Security and limits") ------------------------------------------


@pytest.mark.parametrize("attack", ["junk_list", "million_parts", "stacked_gzip_bomb"])
def test_a_hostile_answer_is_turned_down_at_once_with_one_line(double, tmp_path, attack: str) -> None:
    # Found on main: a 32 MiB junk list took 110 s to be turned down; a million parts printed
    # 2 million characters of "model text".
    double.enqueue(*[Behaviour("hostile", attack=attack)] * 4)
    started = time.monotonic()
    run = cli("a fox", cwd=tmp_path, relay=double)
    assert run.code == 4 and "refused" in run.err and "Traceback" not in run.err, run.err
    assert time.monotonic() - started < 20
    assert len(run.out) + len(run.err) < 2000
    assert len(double.requests) == 1  # not retried


def test_the_key_in_a_successful_answers_text_is_not_printed(double, tmp_path) -> None:
    double.enqueue(Behaviour("hostile", attack="key_in_text"))
    run = cli("a fox", cwd=tmp_path, relay=double)  # cli() checks the key is absent from both streams
    assert run.code == 0 and "Here is your picture" in run.out + run.err and "***" in run.out + run.err
