"""The serving benchmark's peers: what a user would pick instead of ours, each in a venv of its own.

Each peer is a folder here with a ``requirements.txt`` (every version pinned, never in the project's lock
file) and a ``server.py`` started as ``python server.py --model M.onnx --name NAME --port P --workers N``,
serving the Open Inference Protocol v2 REST over onnxruntime (one thread, as ours), and the OIP over gRPC
on ``--grpc-port G`` for those that have it (KServe, Triton). Its venv is made by uv
on first use, bytecode compiled, under ``~/.cache/mlops-path/bench-peers/<peer>-<hash of requirements>``
(a changed pin makes a new one); ``python -m benchmarks.peers`` makes them all ahead of a run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("MLOPS_BENCH_PEERS", Path.home() / ".cache" / "mlops-path" / "bench-peers"))
INSTALL_LIMIT_S = 900.0  # a venv not installed by then fails the benchmark


@dataclass(frozen=True)
class Peer:
    slug: str  # its folder here
    label: str
    binary: bool  # speaks the binary tensor data extension
    grpc: bool = False  # serves the OIP over gRPC too (``--grpc-port P``)
    python: str = "python3.11"  # the interpreter its venv is made from
    optional: bool = False  # measured only when asked for (heavy to install and to run)

    @property
    def folder(self) -> Path:
        return HERE / self.slug

    @property
    def requirements(self) -> Path:
        return self.folder / "requirements.txt"

    def venv(self) -> Path:
        digest = hashlib.sha256(f"{self.python}\n{self.requirements.read_text()}".encode()).hexdigest()
        return CACHE / f"{self.slug}-{digest[:12]}"

    def command(
        self, model: Path, name: str, port: int, workers: int, grpc_port: int | None = None
    ) -> list[str]:
        python = self.venv() / "bin" / "python"
        grpc = ["--grpc-port", str(grpc_port)] if grpc_port is not None else []
        return [str(python), str(self.folder / "server.py"), "--model", str(model), "--name", name,
                "--port", str(port), "--workers", str(workers), *grpc]  # fmt: skip


PEERS = (
    Peer("fastapi_onnx", "hand-written FastAPI + onnxruntime", binary=False),
    Peer("kserve", "KServe 0.21 ModelServer", binary=True, grpc=True),
    Peer("mlserver", "MLServer 1.7", binary=False),
    # its Python backend stub links Debian's libpython: the venv is made from Debian's interpreter
    Peer("pytriton", "PyTriton 0.7 (Triton 2.51)", binary=True, grpc=True, python="/usr/bin/python3.11"),
    Peer("ray_serve", "Ray Serve 2.60", binary=False, optional=True),
)


def available(include_optional: bool = False) -> list[Peer]:
    """The peers to measure: the optional ones only when asked for."""
    return [p for p in PEERS if include_optional or not p.optional]


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def ensure_venv(peer: Peer) -> Path:
    """The peer's venv, made and installed (bytecode compiled) if it is not there yet; its path."""
    venv = peer.venv()
    done = venv / ".installed"
    if done.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)  # an install that did not finish
    began = time.perf_counter()
    print(f"» installing {peer.label} into {venv} ...", flush=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "UV_COMPILE_BYTECODE": "1"}
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    try:
        subprocess.run([*uv(), "venv", "-q", "--python", peer.python, str(venv)], check=True, env=env,
                       timeout=INSTALL_LIMIT_S)  # fmt: skip
        # --python names the venv itself: a VIRTUAL_ENV or uv setting of the caller's never redirects it
        install = ["pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin" / "python")]
        subprocess.run([*uv(), *install, "-r", str(peer.requirements)], check=True, env=env,
                       timeout=INSTALL_LIMIT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"installing {peer.label} took over {INSTALL_LIMIT_S:g} s "
            "(benchmarks.peers.INSTALL_LIMIT_S raises it)"
        ) from None
    done.write_text(f"{time.perf_counter() - began:.1f} s\n")
    return venv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="make the serving benchmark's peer venvs")
    parser.add_argument("--all", action="store_true", help="the optional ones too (Ray Serve)")
    args = parser.parse_args(argv)
    for peer in available(args.all):
        print(ensure_venv(peer))


if __name__ == "__main__":
    main()
