"""Trace's look-up: a request id is found in live and compacted segments (with its shadow's copy), and one
that is gone is said to be past retention when retention deleted records, else unknown."""

import time
from pathlib import Path

import numpy as np

from flows import trace
from models import log_audit
from serving.inference_log import InferenceLog
from tests.unit.models.test_log_audit import redate


def answer(log: InferenceLog, request_id: str, role: str | None = None) -> None:
    one = {"a": np.array([[1.0]])}
    log.write(request_id=request_id, model="m", version="2", run_id="r", route="predict", latency_ms=0.3,
              inputs=one, outputs={"label": np.array([[1]])}, rows=1, role=role)  # fmt: skip


def test_a_request_is_found_with_its_shadow_copy_live_or_compacted(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, worker="1")
    answer(log, "abc")
    answer(log, "abc", role="shadow")
    answer(log, "abcd")  # a longer id holding the first: not a match
    log.close()
    found = trace.find(tmp_path, "abc")
    assert [r.get("role") for r in found] == [None, "shadow"]
    redate(tmp_path, time.time() - 30 * 86_400)
    assert log_audit.compact(tmp_path, older_than=time.time() - 7 * 86_400)
    assert [r["request_id"] for r in trace.find(tmp_path, "abc")] == ["abc", "abc"]
    assert trace.find(tmp_path, "abc")[0]["segment"].endswith(".parquet")


def test_a_request_past_retention_is_said_to_be(tmp_path: Path) -> None:
    unknown = trace.not_found("zzz", tmp_path, 183)
    assert not unknown.found and "not answered here" in unknown.note
    log = InferenceLog(tmp_path, worker="1")
    answer(log, "old")
    log.close()
    now = time.time()
    redate(tmp_path, now - 200 * 86_400)
    log_audit.expire(tmp_path, before=now - 183 * 86_400, retention_days=183, now=now)
    assert trace.find(tmp_path, "old") == []
    gone = trace.not_found("old", tmp_path, 183)
    assert "past retention" in gone.note and "183 days" in gone.note
    assert list(trace.lines(gone)) == [gone.note]
