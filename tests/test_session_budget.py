"""A CLI session whose turns are big (a 4K picture's turn is 15-17 MB of JSON) still goes back
whole while it fits one request; past that the CLI says it is not a continuation."""

from __future__ import annotations

import json
from pathlib import Path

from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.test_cli import KEY, PRO, cli

__all__ = ["KEY"]  # the shared relay double's key (tests/conftest.py reads the module's KEY)


def _first_turn(double: RelayDouble, tmp_path: Path, width: int, height: int) -> Path:
    session = tmp_path / "big.json"
    double.enqueue(Behaviour("image", huge=True, width=width, height=height))
    first = cli("a noisy field", "--model", PRO, "--session", str(session), "--json", cwd=tmp_path, relay=double)
    assert first.code == 0, first.err
    return session


def test_a_16_mb_turn_is_sent_back_whole_with_its_signature(double: RelayDouble, tmp_path: Path) -> None:
    session = _first_turn(double, tmp_path, 2976, 2976)  # ~12.7 MB PNG: ~17 MB of JSON in the turn
    size = session.stat().st_size
    assert 15e6 < size < 19e6, size
    second = cli("now add a fence", "--session", str(session), "--json", cwd=tmp_path, relay=double)
    assert second.code == 0, second.err
    assert second.last_json["continued"] is True and second.last_json["from_latest_picture"] is False
    contents = double.requests[-1].json["contents"]
    assert len(contents) == 3 and contents[1]["parts"][-1].get("thoughtSignature")


def test_a_turn_too_big_to_send_back_is_reported_as_not_continued(double: RelayDouble, tmp_path: Path) -> None:
    session = _first_turn(double, tmp_path, 3400, 3400)  # ~16.5 MB PNG: ~22 MB of JSON
    assert session.stat().st_size > 19e6
    second = cli("now add a fence", "--session", str(session), "--json", cwd=tmp_path, relay=double)
    assert second.code == 0, second.err
    assert second.last_json["continued"] is False and second.last_json["from_latest_picture"] is True
    assert "not a continuation" in second.err
    contents = double.requests[-1].json["contents"]
    assert len(contents) == 1  # a fresh request: the latest picture as its input, no history
    assert any("inlineData" in p for p in contents[0]["parts"])
    assert json.loads(session.read_text())["turns"][0]["parts"][0]["text"] == "now add a fence"
