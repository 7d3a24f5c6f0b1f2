"""What a hostile relay can make the CLI print, and where it can make it connect.

Found by a black-box trial against the CLI: control characters and forged lines reached the
operator's terminal, a 60,000-character redirect target was printed whole, a failed picture
download printed the body of whatever the relay pointed it at, and the operator's own
(trusted) relay could point a picture download at a cloud-metadata address."""

from __future__ import annotations

import errno
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.relay.client import RelayClient
from bot.relay.types import GenerationRequest, RelayConfig, RelayFailed
from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.test_cli import KEY, cli

HOSTILE_TEXT = "bad\n\nFAKE: Saved /tmp/x.png\r\x1b[2K\x1b]0;pwned\x07\x1b[31mred\x1b[0m end\u202eevil"
CONTROL = {"\x1b", "\x07", "\r", "\u202e"}


def test_control_characters_and_forged_lines_never_reach_the_terminal(double: RelayDouble, tmp_path: Path) -> None:
    error = json.dumps({"error": {"code": 400, "message": HOSTILE_TEXT}})
    double.enqueue(Behaviour("raw", status=400, body=error))
    run = cli("a fox", cwd=tmp_path, relay=double, env={"NB_RETRY_ATTEMPTS": "1"})
    assert run.code == 4 and "bad" in run.err
    assert not CONTROL & set(run.err + run.out)
    assert not any(line.startswith("FAKE") for line in run.err.splitlines())
    # The same text as the model's words on a successful answer.
    double.enqueue(Behaviour("image", width=64, height=48, text=HOSTILE_TEXT))
    run = cli("a fox", cwd=tmp_path, relay=double)
    assert run.code == 0, run.err
    assert not CONTROL & set(run.err + run.out)
    assert not any(line.startswith("FAKE") for line in run.err.splitlines())


def test_a_huge_redirect_target_is_cut(double: RelayDouble, tmp_path: Path) -> None:
    double.enqueue(Behaviour("raw", status=307, body="", headers={"Location": "https://relay2.example/" + "a" * 60_000}))
    run = cli("a fox", cwd=tmp_path, relay=double, env={"NB_RETRY_ATTEMPTS": "1"})
    assert run.code == 4 and "redirect" in run.err
    assert max(len(line) for line in run.err.splitlines()) < 2_000


@pytest.fixture
def secret_server() -> Iterator[str]:
    """An "internal" server on loopback that answers 403 with something secret."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"internal-only: AccessKeyId=ASIAFAKE SecretAccessKey=FAKESECRET"
            self.send_response(403)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/img"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_picture_download_does_not_show_what_answered(double: RelayDouble, tmp_path: Path, secret_server: str) -> None:
    answer = json.dumps({"created": 1, "data": [{"url": secret_server}]})
    double.enqueue(*[Behaviour("raw", body=answer)] * 2)
    run = cli("a fox", cwd=tmp_path, relay=double, fmt="openai-images", env={"NB_RETRY_ATTEMPTS": "1"})
    assert run.code == 4 and "403" in run.err
    assert "FAKESECRET" not in run.err + run.out and "AccessKeyId" not in run.err + run.out


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address this process dials; anything but loopback is refused before a packet
    leaves, so even a regression here never reaches another address."""
    dialled: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def vet(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        dialled.append(host)
        if not (host.startswith("127.") or host == "::1"):
            raise OSError(errno.ENETUNREACH, "the test allows loopback only")

    def connect(sock: socket.socket, address: object) -> None:
        vet(address)
        real_connect(sock, address)  # type: ignore[arg-type]

    def connect_ex(sock: socket.socket, address: object) -> int:
        vet(address)
        return real_connect_ex(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return dialled


@pytest.mark.parametrize(
    "link",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/",
        "http://100.100.100.200/latest/",
    ],
)
async def test_the_operators_own_relay_cannot_point_a_download_at_metadata(loopback_only: list[str], link: str) -> None:
    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"fileData": {"mimeType": "image/png", "fileUri": link}}]}, "finishReason": "STOP"}
        ]
    }
    with RelayDouble(api_key=KEY) as double:
        double.enqueue(Behaviour("raw", body=json.dumps(answer)))
        relay = RelayConfig(base_url=double.url, api_key=KEY, trusted=True, name="operator")
        async with RelayClient(max_attempts=1) as client:  # as the CLI builds it: no URL guard of its own
            with pytest.raises(RelayFailed) as caught:
                await client.generate(relay, GenerationRequest(prompt="a cat"))
    assert caught.value.key == "error.url_refused"
    assert all(host.startswith("127.") or host == "::1" for host in loopback_only), loopback_only


def test_an_output_folder_that_cannot_be_written_is_refused_before_anything_is_sent(double: RelayDouble, tmp_path: Path) -> None:
    # /proc accepts os.access(W_OK) from root but no new file: the relay must not be paid first.
    run = cli("a fox", "--out", "/proc/nano-banana-test.png", cwd=tmp_path, relay=double)
    assert run.code == 2 and "not writable" in run.err
    assert len(double.requests) == 0
