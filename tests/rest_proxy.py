"""The shared REST rate-limit proxy the README documents: ``@discordjs/proxy`` (the discord.js
team's), installed from npm at test time into a cache folder and served by the README's server.js.

Every bot process points ``DISCORD_API_BASE`` at it; it forwards to ``upstream`` (the Discord
double), queueing per rate-limit bucket for all of them at once. Without npm/node, or when the
install fails, :func:`proxy_dir` skips the test with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = ("@discordjs/proxy@2.1.1", "@discordjs/rest@2.6.3")
README = Path(__file__).resolve().parent.parent / "README.md"


def server_js() -> str:
    """The README's server.js, as an operator copies it: the test runs what the guide tells them to run."""
    text = README.read_text()
    start = text.index("cat > server.js <<'EOF'\n") + len("cat > server.js <<'EOF'\n")
    lines = text[start : text.index("\n   EOF\n", start)].splitlines()
    return "\n".join(line.removeprefix("   ") for line in lines) + "\n"


def proxy_dir() -> Path:
    """The folder holding node_modules with the proxy (installed once per machine)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node not found: the REST proxy (@discordjs/proxy) cannot be installed, so this test did not run")
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nano-banana-bot-tests" / "discordjs-proxy"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.js").write_text(server_js())
    if not (folder / "node_modules" / "@discordjs" / "proxy").is_dir():
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder), *PACKAGES],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm install {' '.join(PACKAGES)} failed, so this test did not run: {done.stderr.strip()[-300:]}")
    return folder


@contextlib.contextmanager
def running_proxy(upstream_api: str, output: list[str] | None = None) -> Iterator[str]:
    """Start the proxy in front of ``upstream_api`` (``http://host:port/api``); yields its API
    base. ``output`` gets what the proxy printed, once it has stopped."""
    folder = proxy_dir()
    proc = subprocess.Popen(
        [shutil.which("node") or "node", str(folder / "server.js")],
        cwd=folder,
        env={**os.environ, "UPSTREAM": upstream_api, "PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise AssertionError(f"the REST proxy did not start: {line}{proc.stdout.read()[-2000:]}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/api/v10"
        # Every process's REST traffic goes through it: had it died mid-test, say so, with its words.
        if proc.poll() is not None:
            raise AssertionError(f"the REST proxy exited ({proc.returncode}) during the test: {proc.stdout.read()[-2000:]}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if output is not None and proc.stdout is not None:
            output.append(proc.stdout.read())
