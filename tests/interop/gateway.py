"""A real LiteLLM proxy on loopback, in front of the relay double acting as Google's API.

LiteLLM is large (FastAPI, uvicorn, pydantic, tokenizers...) and is no dependency of the bot:
it is installed from PyPI into its own virtual environment, ``.venv-litellm/`` in the work
tree (git-ignored), once, pinned to :data:`LITELLM_VERSION`. A stamp file makes the install
idempotent; a changed pin reinstalls.

No network beyond loopback: the proxy gets ``LITELLM_LOCAL_*`` switches (the model cost map,
blog posts and other tables it would otherwise download are read from the package), its
outbound HTTP(S) proxy points at a closed loopback port (so anything that still tried to
phone home fails on 127.0.0.1), and every upstream (``api_base``, ``GEMINI_API_BASE``) is the
double on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

LITELLM_VERSION = "1.108.7"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-litellm"
MASTER_KEY = "sk-gateway-interop-0123456789"
UPSTREAM_KEY = "google-upstream-key"
# Our catalogue ids, served by LiteLLM under the same names.
MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")


class InstallFailed(RuntimeError):
    pass


def _pypi_reachable() -> bool:
    """Whether pip can reach its index at all (a local run without network may skip)."""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(ROOT / ".venv-litellm-probe"), "six"],
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(ROOT / ".venv-litellm-probe", ignore_errors=True)
    return probe.returncode == 0


def litellm_binary(notice=print) -> Path:
    """The ``litellm`` CLI of the pinned version, installing it first when needed."""
    binary = VENV / "bin" / "litellm"
    stamp = VENV / ".installed"
    want = f"litellm[proxy]=={LITELLM_VERSION}"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return binary
    notice(f"interop: installing {want} into {VENV} (once; a few minutes)")
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", want],
            capture_output=True,
            text=True,
            timeout=1500,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InstallFailed(f"could not install {want}: {exc}") from None
    if done.returncode != 0 or not binary.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise InstallFailed(f"could not install {want} (pip exit {done.returncode}):\n{tail}")
    stamp.write_text(want + "\n")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gateway:
    """One running proxy. ``url`` is its root (http://127.0.0.1:PORT)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own process group: uvicorn workers too
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def config_yaml(upstream: str, *, num_retries: int | None = None, request_timeout: float | None = None, drop_params: bool = False) -> str:
    """LiteLLM's config: each catalogue model on the ``gemini/`` provider, at the double.

    Written as YAML text by hand (no PyYAML in the bot's environment); values are plain."""
    lines = ["model_list:"]
    for model in MODELS:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: gemini/{model}",
            f"      api_base: {upstream}/v1beta",
            f"      api_key: {UPSTREAM_KEY}",
        ]
    # A model entry with a 2 s limit: LiteLLM's own timeout, answered as HTTP 408.
    lines += [
        "  - model_name: timeout-2s",
        "    litellm_params:",
        f"      model: gemini/{MODELS[1]}",
        f"      api_base: {upstream}/v1beta",
        f"      api_key: {UPSTREAM_KEY}",
        "      timeout: 2",
    ]
    lines += ["general_settings:", f"  master_key: {MASTER_KEY}", "litellm_settings:", "  telemetry: false"]
    if drop_params:
        lines.append("  drop_params: true")
    if request_timeout is not None:
        lines.append(f"  request_timeout: {request_timeout}")
    if num_retries is not None:
        lines += ["router_settings:", f"  num_retries: {num_retries}"]
    return "\n".join(lines) + "\n"


def start(binary: Path, upstream: str, workdir: Path, **config: object) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "litellm.yaml"
    cfg.write_text(config_yaml(upstream, **config))  # type: ignore[arg-type]
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
        "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        # The pass-through route (/gemini/...) forwards here, with this key.
        "GEMINI_API_BASE": upstream,
        "GEMINI_API_KEY": UPSTREAM_KEY,
        # Anything that would still reach out goes to a closed loopback port instead.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    log_path = workdir / "litellm.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {process.returncode} while starting:\n{gateway.log_tail()}")
        try:
            if httpx.get(f"{gateway.url}/health/liveliness", timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    gateway.stop()
    raise RuntimeError(f"LiteLLM did not start within 180 s:\n{gateway.log_tail()}")
