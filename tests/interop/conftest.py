"""Fixtures for the LiteLLM interop suite: one real proxy per session, in front of one relay
double (acting as Google's API), both on 127.0.0.1.

Installing LiteLLM is part of the set-up (see ``gateway.py``). In CI (``CI=true``) a failed
install fails the suite; on a developer's machine without a reachable package index the
suite is skipped with that reason, visibly (pytest's ``-ra`` summary lists it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.relay_double import Behaviour, RelayDouble

from . import gateway as gw


def _notice(text: str) -> None:
    # Past pytest's capture: an install of a few minutes must not look like a hang.
    sys.__stderr__.write(text + "\n")
    sys.__stderr__.flush()


@pytest.fixture(scope="session")
def litellm_bin() -> Path:
    try:
        return gw.litellm_binary(notice=_notice)
    except gw.InstallFailed as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"LiteLLM could not be installed for the interop suite: {exc}", pytrace=False)
        if not gw._pypi_reachable():
            pytest.skip(f"LiteLLM interop suite skipped: the package index is unreachable from this machine ({exc})")
        pytest.fail(f"LiteLLM could not be installed although the package index answers: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def upstream() -> Iterator[RelayDouble]:
    """The relay double as Google's API (the key LiteLLM's config holds)."""
    with RelayDouble(api_key=gw.UPSTREAM_KEY) as relay:
        yield relay


@pytest.fixture(scope="session")
def gateway(litellm_bin: Path, upstream: RelayDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[gw.Gateway]:
    """LiteLLM as a community runs it: its defaults (retries, drop_params off), plus one
    model entry with a 2 s timeout for the gateway-timeout case."""
    proxy = gw.start(litellm_bin, upstream.url, tmp_path_factory.mktemp("litellm"))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def double(upstream: RelayDouble) -> RelayDouble:
    upstream.reset()
    upstream.default = Behaviour("image", width=96, height=96)
    return upstream
