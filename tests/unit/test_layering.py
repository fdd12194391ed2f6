"""The layering contract of ``make lint`` (import-linter, ``[tool.importlinter]`` in pyproject.toml).

The tree keeps it; a copy of the tree with one deliberate crossing per contract breaks exactly that one,
function-level imports included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.tracking import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_every_layering_contract() -> None:
    done = lint_imports(PROJECT_ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("serving/follower.py", "from flows import gate", "serving never imports flows"),
        ("flows/checks.py", "    from serving.http import ApiKeyMiddleware", "flows never imports serving"),
        ("models/features.py", "    import mlflow", "models imports no framework"),
    ],
)
def test_a_crossing_breaks_its_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    for item in ("models", "flows", "serving", "pyproject.toml"):
        source = PROJECT_ROOT / item
        if source.is_dir():
            shutil.copytree(source, tmp_path / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / item)
    target = tmp_path / module
    crossing = f"def _crossing() -> None:\n{line}\n" if line.startswith(" ") else f"{line}\n"
    target.write_text(target.read_text() + "\n\n" + crossing)
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "2 kept, 1 broken" in done.stdout, done.stdout[-3000:]
    rows = done.stdout.splitlines()
    assert any(row.startswith(broken) and row.endswith("BROKEN") for row in rows), done.stdout[-3000:]
