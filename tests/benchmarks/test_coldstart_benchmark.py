"""The cold-start benchmark's own code: the clone's environment, the 'before' install, the table."""

from pathlib import Path

from benchmarks.coldstart import VARIANTS, Row, machine_env, table, without_install_bytecode
from flows.tracking import PROJECT_ROOT


def test_the_clone_gets_the_machine_environment_with_the_variant_switches(monkeypatch) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", str(PROJECT_ROOT / ".venv"))
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")
    monkeypatch.setenv("PATH", f"{PROJECT_ROOT / '.venv' / 'bin'}:/usr/bin")
    ours, unset, _ = VARIANTS
    env = machine_env(ours)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PATH"] == "/usr/bin"
    assert "VIRTUAL_ENV" not in env and "UV_RUN_RECURSION_DEPTH" not in env
    assert "PYTHONDONTWRITEBYTECODE" not in machine_env(unset)


def test_the_before_install_drops_only_the_bytecode_setting(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    without_install_bytecode(tmp_path)
    text = (tmp_path / "pyproject.toml").read_text()
    original = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert "compile-bytecode = true" in original and "compile-bytecode = true" not in text
    assert len(text.splitlines()) == len(original.splitlines()) - 1


def test_table_names_failures_and_ratios() -> None:
    ours, unset, before = VARIANTS
    rows = [
        Row(ours, 40.0, 30.0, "", 9.0, 9.5, 1.2),
        Row(unset, 40.0, 33.0, "", 9.0, 9.5, 1.2),
        Row(before, 12.0, None, "RuntimeError: Timed out", None, None, 3.0),
    ]
    text = table(rows, busy_machine=False)
    assert "| 30.0 | 70.0 | 9.0 | 9.5 | 1.2 | 1.00x |" in text
    assert "| 33.0 |" in text and "1.10x" in text
    assert "| failed | failed | - | - | 3.0 | - |" in text and "Timed out" in text
