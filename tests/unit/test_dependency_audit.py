"""Dependency audit: pip-audit over exactly the locked dependencies (``uv export --frozen``).

Every finding must be fixed (a bump that fits the constraints in pyproject.toml) or listed, with the reason
it is accepted, in docs/security.md; any other finding fails this test. pip-audit asks PyPI's JSON API for
each pinned version's known vulnerabilities; where that API does not answer per version (a PyPI mirror
without it), nothing can be audited and the test says so by skipping, rather than passing on no data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.tracking import PROJECT_ROOT

ACCEPTED_FILE = PROJECT_ROOT / "docs" / "security.md"
VULNERABILITY_ID = re.compile(r"^\|\s*((?:GHSA|PYSEC|CVE|OSV)-[\w-]+)\s*\|", re.MULTILINE)


def accepted_findings() -> set[str]:
    """IDs listed in the first column of docs/security.md's table of accepted findings."""
    return set(VULNERABILITY_ID.findall(ACCEPTED_FILE.read_text()))


def locked_requirements(target: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "uv", "export", "--frozen", "--no-hashes", "--no-emit-project", "--all-groups",
         "--quiet", "-o", str(target)],
        cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def pinned(requirements: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^\s;]+)", requirements.read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in the lock"
    return match.group(1)


def skip_unless_pypi_answers_per_version(requirements: Path) -> None:
    url = f"https://pypi.org/pypi/httpx/{pinned(requirements, 'httpx')}/json"
    try:
        status = httpx.get(url, timeout=15).status_code
    except httpx.HTTPError as exc:
        pytest.skip(f"no vulnerability data: PyPI unreachable ({type(exc).__name__})")
    if status != 200:
        pytest.skip(f"no vulnerability data: PyPI answers {url} with {status} (a mirror without that API)")


def audit(requirements: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
         "--vulnerability-service", "pypi", "--format", "json", "--progress-spinner", "off"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_accepted_findings_file_is_well_formed() -> None:
    text = ACCEPTED_FILE.read_text()
    assert "| id | package | version | why it is accepted |" in text
    for finding in accepted_findings():
        row = next(line for line in text.splitlines() if line.startswith(f"| {finding} "))
        assert len([cell for cell in row.split("|") if cell.strip()]) == 4, row  # every cell filled in


def test_locked_dependencies_have_no_unaccepted_vulnerability(tmp_path: Path) -> None:
    requirements = locked_requirements(tmp_path / "requirements.txt")
    skip_unless_pypi_answers_per_version(requirements)
    report = audit(requirements)
    dependencies = report["dependencies"]
    unaudited = [f"{d['name']}: {d['skip_reason']}" for d in dependencies if d.get("skip_reason")]
    assert len(dependencies) > 100 and unaudited == [], unaudited
    accepted = accepted_findings()
    new = [
        f"{d['name']} {d['version']}: {vuln['id']} {vuln.get('aliases')} fixed in {vuln.get('fix_versions')}"
        for d in dependencies
        for vuln in d.get("vulns", [])
        if not ({vuln["id"], *vuln.get("aliases", [])} & accepted)
    ]
    assert new == [], "fix by a bump or document in docs/security.md:\n" + "\n".join(new)
