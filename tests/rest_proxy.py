"""The shared REST rate-limit proxy the README documents: ``@discordjs/proxy`` (the discord.js
team's), installed from npm at test time into a cache folder and served by a few lines of node.

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
SERVER_JS = """\
const { createServer } = require('node:http');
const { proxyRequests } = require('@discordjs/proxy');
const { REST } = require('@discordjs/rest');
// The API base without its version: the proxy strips /api/vN from each path, REST adds /v10.
const api = process.env.UPSTREAM || 'https://discord.com/api';
const rest = new REST({ api, version: '10', retries: 0, timeout: 60000 });
const server = createServer(proxyRequests(rest));
const port = Number(process.env.PORT || 0), host = process.env.HOST || '127.0.0.1';
server.listen(port, host, () => console.log(`listening ${server.address().port}`));
"""


def proxy_dir() -> Path:
    """The folder holding node_modules with the proxy (installed once per machine)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node not found: the REST proxy (@discordjs/proxy) cannot be installed, so this test did not run")
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nano-banana-bot-tests" / "discordjs-proxy"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.js").write_text(SERVER_JS)
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
def running_proxy(upstream_api: str) -> Iterator[str]:
    """Start the proxy in front of ``upstream_api`` (``http://host:port/api``); yields its API base."""
    folder = proxy_dir()
    proc = subprocess.Popen(
        [shutil.which("node") or "node", str(folder / "server.js")],
        cwd=folder,
        env={**os.environ, "UPSTREAM": upstream_api},
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
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
