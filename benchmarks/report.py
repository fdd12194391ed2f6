"""Where a benchmark's Markdown table goes: its results file and the terminal."""

from __future__ import annotations

from pathlib import Path


def publish(report: str, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return report
