"""`make demo` and `make stop` exactly as the README says, from a fresh clone, in the machine's environment.

``make stack``'s first start and Ctrl-C run the same way in ``test_stack.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.integration.newcomer import listening_ports, processes_in, run_make

pytestmark = pytest.mark.integration

# From a fresh clone: the install (uv sync, bytecode compiled) and the demo; both take about a minute here.
DEMO_LIMIT_S = 900
README_PORTS = {3000, 4200, 5000}  # the service, and the stack's Prefect and MLflow servers


def printed_prediction(text: str) -> dict[str, object]:
    """The JSON the demo prints after "a prediction from it"."""
    start = text.index("» a prediction from it")
    body = text[text.index("{", start) : text.index("\n}", start) + 2]
    prediction: dict[str, object] = json.loads(body)
    return prediction


def test_make_demo_then_make_stop_from_a_fresh_clone(newcomer_clone: Path, tmp_path: Path) -> None:
    state = newcomer_clone / ".mlops"
    assert not state.exists()
    try:
        text = run_make(newcomer_clone, "demo", tmp_path / "demo.log", DEMO_LIMIT_S)
        served = re.search(r"» model (\S+) version (\d+) is champion and served at (\S+) \(pid (\d+)\)", text)
        assert served, text[-6000:]
        prediction = printed_prediction(text)
        assert prediction["model_name"] == served[1] == "breast-cancer-classifier"
        assert prediction["model_version"] == served[2] == "1"
        assert re.fullmatch(r"[0-9a-f]{32}", str(prediction["run_id"])), prediction
        assert re.fullmatch(r"[0-9a-f]{32}", str(prediction["request_id"])), prediction
        assert served[3] == "http://127.0.0.1:3000"  # the README's address
        assert 3000 in listening_ports()  # the service keeps running, as the demo says
        # its logs reached the temporary Prefect server before it stopped (else a minute of retries, then
        # "--- Error logging to API ---" after the prediction)
        assert "Error logging to API" not in text and "Traceback" not in text, text[-3000:]

        stopped = run_make(newcomer_clone, "stop", tmp_path / "stop.log", 120)
        assert "service stopped" in stopped
        assert processes_in(newcomer_clone) == []
        assert listening_ports() & README_PORTS == set()  # other tests' servers may run meanwhile
    finally:
        run_make(newcomer_clone, "stop", tmp_path / "stop-again.log", 120)
        shutil.rmtree(state, ignore_errors=True)  # the stack's first start (test_stack.py) begins empty
