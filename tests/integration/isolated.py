"""A real `bentoml serve` whose environment is exactly its settings (nothing inherited from the caller's
``MLOPS_*`` variables), and measurements of its processes from outside."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from flows.deploy import LocalService
from models.settings import Settings


@dataclass(frozen=True)
class IsolatedService(LocalService):
    """``LocalService`` with its settings as the only ``MLOPS_*`` variables, plus ``extra_env``."""

    extra_env: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        inherited = {k: v for k, v in super().environment().items() if not k.startswith("MLOPS_")}
        return {**inherited, **self.settings.to_env(), **dict(self.extra_env)}

    def processes(self) -> list[psutil.Process]:
        """The server and its workers (a worker runs in a session of its own, so not by process group)."""
        pid = self.pid()
        if pid is None:
            return []
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        return [p for p in self.processes() if "_bentoml_impl.worker" in " ".join(p.cmdline())]

    def worker_rss(self) -> int:
        """Resident memory of the worker processes, in bytes."""
        return sum(p.memory_info().rss for p in self.workers())

    def stop_all(self) -> None:
        """Stop the server, then make sure none of its processes outlives it."""
        left = self.processes()
        self.stop()
        for process in left:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
        psutil.wait_procs(left, timeout=10)


@contextmanager
def serving(settings: Settings, **extra_env: str) -> Iterator[IsolatedService]:
    """Start the service on ``settings`` and wait until it is ready; stop every process it started."""
    service = IsolatedService(settings, tuple(extra_env.items()))
    try:
        service.start()
        service.wait_ready(settings.serve_start_timeout_s)
        yield service
    finally:
        service.stop_all()
