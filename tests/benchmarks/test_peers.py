"""The serving benchmark's peers: each a pinned requirements file and a server, its venv keyed by both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import peers

PIN = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+]+$")


@pytest.mark.parametrize("peer", peers.available(include_optional=True), ids=lambda p: p.slug)
def test_every_peer_pins_every_requirement_and_has_a_server(peer: peers.Peer) -> None:
    lines = [line.split("#")[0].strip() for line in peer.requirements.read_text().splitlines()]
    unpinned = [line for line in lines if line and not PIN.match(line)]
    assert unpinned == [], f"{peer.slug}: every requirement pinned with ==, got {unpinned}"
    assert "--port" in (peer.folder / "server.py").read_text()


def test_a_changed_pin_or_interpreter_makes_a_new_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "HERE", tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "requirements.txt").write_text("numpy==2.4.6\n")
    peer = peers.Peer("x", "x", binary=False)
    first = peer.venv()
    assert first.name.startswith("x-")
    assert peers.Peer("x", "x", binary=False, python="/usr/bin/python3.11").venv() != first
    (tmp_path / "x" / "requirements.txt").write_text("numpy==2.4.5\n")
    assert peer.venv() != first
    command = peer.command(Path("m.onnx"), "bc", 1234, 2)
    assert command[0] == str(peer.venv() / "bin" / "python")
    assert command[2:] == ["--model", "m.onnx", "--name", "bc", "--port", "1234", "--workers", "2"]
