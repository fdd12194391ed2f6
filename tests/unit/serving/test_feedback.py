"""Feedback: labels for earlier answers are checked against every worker's inference log and the model's
label type, all or none; refusals write nothing; a repeated label is harmless, a different one refused."""

from pathlib import Path

import numpy as np
import orjson
import pytest

from models.inference_records import feedback_labels, read_records
from models.log_audit import verify
from serving.dataplane import InvalidInput
from serving.feedback import (
    MAX_LABELS,
    FeedbackDesk,
    LabelConflict,
    TooManyLabels,
    UnknownRequest,
    parse_labels,
)
from serving.inference_log import InferenceLog

CLASSES = (np.int64(0), np.int64(1))


def answered(log: InferenceLog, request_id: str, rows: int = 1, **extra: object) -> None:
    log.write(request_id=request_id, model="m", version="3", run_id="run-3", route="predict",
              latency_ms=0.5, inputs={"a": np.zeros((rows, 1))}, outputs={"label": np.zeros((rows, 1))},
              rows=rows, **extra)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
def desk(tmp_path: Path) -> FeedbackDesk:
    one, two = InferenceLog(tmp_path / "log", worker="1"), InferenceLog(tmp_path / "log", worker="2")
    answered(one, "a")
    answered(two, "b", rows=3)  # another worker's answer
    answered(one, "shadow-only", role="shadow")
    one.write_error(request_id="refused", model="m", version="3", route="predict", status=400, error="x")
    return FeedbackDesk(tmp_path / "log", tmp_path / "feedback", worker="1", window_s=3600)


def body(*labels: dict[str, object]) -> bytes:
    return orjson.dumps({"labels": list(labels)})


def written(tmp_path: Path) -> list[dict[str, object]]:
    return list(read_records(tmp_path / "feedback"))


def test_labels_for_any_workers_answers_are_written_with_the_answers_provenance(
    desk: FeedbackDesk, tmp_path: Path
) -> None:
    labels = parse_labels(body({"request_id": "a", "label": 1}, {"request_id": "b", "row": 2, "label": 0}))
    accepted = desk.submit("m", labels, CLASSES, "fb-1")
    assert (accepted.written, accepted.repeated) == (2, 0)
    records = written(tmp_path)
    assert [(r["request_id"], r["row"], r["label"]) for r in records] == [("a", 0, 1), ("b", 2, 0)]
    assert {(r["version"], r["run_id"], r["feedback_id"]) for r in records} == {("3", "run-3", "fb-1")}
    assert feedback_labels(tmp_path / "feedback", model="m") == {("a", 0): 1, ("b", 2): 0}
    desk.close()
    assert verify(tmp_path / "feedback").ok  # chained and sealed like the inference log


def test_a_repeated_label_is_accepted_and_not_written_again_and_a_different_one_is_refused(
    desk: FeedbackDesk, tmp_path: Path
) -> None:
    desk.submit("m", parse_labels(body({"request_id": "a", "label": 1})), CLASSES, "fb-1")
    again = desk.submit("m", parse_labels(body({"request_id": "a", "label": 1})), CLASSES, "fb-2")
    assert (again.written, again.repeated) == (0, 1)
    with pytest.raises(LabelConflict, match="already labelled 1"):
        desk.submit("m", parse_labels(body({"request_id": "a", "label": 0})), CLASSES, "fb-3")
    # another worker's desk sees the label the first one wrote
    other = FeedbackDesk(tmp_path / "log", tmp_path / "feedback", worker="2", window_s=3600)
    with pytest.raises(LabelConflict):
        other.submit("m", parse_labels(body({"request_id": "a", "label": 0})), CLASSES, "fb-4")
    assert len(written(tmp_path)) == 1


BAD = {
    "unknown id": (body({"request_id": "nope", "label": 1}), UnknownRequest, "no answered request 'nope'"),
    "a refusal": (body({"request_id": "refused", "label": 1}), UnknownRequest, "no answered request"),
    "a shadow's copy": (body({"request_id": "shadow-only", "label": 1}), UnknownRequest, "no answered"),
    "no such row": (body({"request_id": "b", "row": 3, "label": 1}), UnknownRequest, "has 3 row"),
    "wrong label type": (body({"request_id": "a", "label": "yes"}), InvalidInput, r"classes \(0, 1\)"),
    "unknown class": (body({"request_id": "a", "label": 7}), InvalidInput, "got 7"),
    "a bool": (body({"request_id": "a", "label": True}), InvalidInput, "classes"),
    "duplicate": (body({"request_id": "a", "label": 1}, {"request_id": "a", "label": 1}), InvalidInput,
                  "labelled twice"),
    "oversized": (body(*[{"request_id": "a", "label": 1}] * (MAX_LABELS + 1)), TooManyLabels, "at most"),
    "no labels": (b'{"labels": []}', InvalidInput, "expected"),
    "not JSON": (b"{", InvalidInput, "invalid JSON"),
    "extra field": (body({"request_id": "a", "label": 1, "weight": 2}), InvalidInput, "expected an object"),
    "negative row": (body({"request_id": "a", "row": -1, "label": 1}), InvalidInput, "row"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_feedback_is_refused_naming_the_label_and_nothing_is_written(
    desk: FeedbackDesk, tmp_path: Path, case: str
) -> None:
    payload, error, message = BAD[case]
    good_first = {"request_id": "b", "label": 1}
    with pytest.raises(error, match=message):
        parsed = parse_labels(payload)
        desk.submit("m", [*parse_labels(body(good_first)), *parsed], CLASSES, "fb")
    assert written(tmp_path) == []  # not even the good label before it


def test_a_regressors_labels_are_finite_numbers(desk: FeedbackDesk) -> None:
    assert desk.submit("m", parse_labels(body({"request_id": "a", "label": 2.5})), None, "fb").written == 1
    with pytest.raises(InvalidInput, match="finite number"):
        desk.submit("m", parse_labels(body({"request_id": "b", "label": "2.5"})), None, "fb")


def test_labels_for_another_model_or_past_the_window_are_unknown(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path / "log", worker="1")
    answered(log, "a")
    desk = FeedbackDesk(tmp_path / "log", tmp_path / "feedback", worker="1", window_s=3600)
    with pytest.raises(UnknownRequest, match="of model 'other'"):
        desk.submit("other", parse_labels(body({"request_id": "a", "label": 1})), CLASSES, "fb")
    expired = FeedbackDesk(tmp_path / "log", tmp_path / "feedback", worker="1", window_s=1e-9)
    with pytest.raises(UnknownRequest, match="in the last"):
        expired.submit("m", parse_labels(body({"request_id": "a", "label": 1})), CLASSES, "fb")


def test_requests_answered_after_the_index_was_built_are_found(desk: FeedbackDesk, tmp_path: Path) -> None:
    desk.submit("m", parse_labels(body({"request_id": "a", "label": 1})), CLASSES, "fb")
    later = InferenceLog(tmp_path / "log", worker="3")
    answered(later, "c")
    assert desk.submit("m", parse_labels(body({"request_id": "c", "label": 0})), CLASSES, "fb").written == 1
