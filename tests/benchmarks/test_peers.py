"""The serving benchmark's peers: each a pinned requirements file and a server, its venv keyed by both."""

from __future__ import annotations

import re
import subprocess
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


def test_a_peer_venv_is_installed_once_and_an_unfinished_one_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "HERE", tmp_path / "peers")
    monkeypatch.setattr(peers, "CACHE", tmp_path / "cache")
    (tmp_path / "peers" / "x").mkdir(parents=True)
    (tmp_path / "peers" / "x" / "requirements.txt").write_text("six==1.16.0\n")
    peer = peers.Peer("x", "x", binary=False)
    peer.venv().mkdir(parents=True)  # what an interrupted install leaves
    venv = peers.ensure_venv(peer)
    python = venv / "bin" / "python"
    found = subprocess.run(
        [python, "-c", "import six; print(six.__version__)"], capture_output=True, text=True
    )
    assert found.stdout.strip() == "1.16.0", found.stderr
    marker = (venv / ".installed").stat().st_mtime_ns
    assert peers.ensure_venv(peer) == venv
    assert (venv / ".installed").stat().st_mtime_ns == marker  # not installed again
