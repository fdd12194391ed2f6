"""Feedback on a real `bentoml serve` (two workers, an API key): labels for 1,000 answered requests arrive
after the monitor's window has moved on, and the monitor's live accuracy is the one computed by hand; bad
feedback gets a 4xx naming the label, with a request id, and writes nothing; the same over gRPC."""

import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from flows.deploy import LocalService
from flows.monitoring import monitor_flow
from flows.processes import free_port
from flows.tracking import connect
from flows.training import training_pipeline
from models import datasets
from models.inference_records import read_records
from models.log_audit import verify
from serving.grpc_v2 import feedback_pb2 as fb
from serving.grpc_v2 import feedback_pb2_grpc as fb_grpc
from tests.conftest import make_settings
from tests.integration.conftest import listening_sockets, use
from tests.integration.test_rollout import ANY_CHAMPION, FAST

pytestmark = pytest.mark.integration
SECRET = "feedback-key"
REQUESTS = 1000
WRONG = 100  # the last labels say the opposite of the answer: live accuracy drops below the gate's


def answer_requests(client: httpx.Client, split: datasets.Split) -> list[tuple[str, int, int]]:
    """(request id, predicted label, true label) for REQUESTS single-row requests over the held-out rows."""
    records = datasets.records(split.holdout, datasets.BREAST_CANCER)
    truth = split.holdout[datasets.BREAST_CANCER.target].tolist()
    answers = []
    for i in range(REQUESTS):
        response = client.post("/predict", json={"records": [records[i % len(records)]]})
        assert response.status_code == 200, response.text
        predicted = response.json()["predictions"][0]["label"]
        answers.append((response.headers["x-request-id"], predicted, int(truth[i % len(records)])))
    return answers


def refusals(client: httpx.Client, url: str, rid: str, other: str, label: int) -> dict[str, Any]:
    """Each bad feedback call: (response, status expected, words its error names)."""
    one = [{"request_id": rid, "label": label}]
    return {
        "unknown id": (client.post(url, json={"labels": [{"request_id": "never-answered", "label": 1}]}),
                       422, "never-answered"),
        "wrong label type": (client.post(url, json={"labels": [{"request_id": other, "label": "yes"}]}),
                             400, "classes"),
        "duplicate": (client.post(url, json={"labels": [{"request_id": other, "label": 1}] * 2}),
                      400, "twice"),
        "different label": (client.post(url, json={"labels": [{"request_id": rid, "label": 1 - label}]}),
                            409, "already labelled"),
        "oversized": (client.post(url, json={"labels": one * 10_001}), 413, "at most"),
        "not JSON": (client.post(url, content=b"label=1", headers={"content-type": "text/plain"}),
                     415, "content-type"),
        "no API key": (httpx.post(str(client.base_url).rstrip("/") + url, json={"labels": one}), 401, ""),
        "unknown model": (client.post("/v2/models/nope/feedback", json={"labels": one}), 404, "nope"),
    }  # fmt: skip


def grpc_feedback(port: int, model: str, unlabelled: str, labelled: str) -> None:
    """The gRPC ``Submit`` call: a label written once, and its refusals as status codes with a request id."""
    deadline = time.monotonic() + 30
    while listening_sockets(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    auth = (("authorization", f"Bearer {SECRET}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        submit = fb_grpc.FeedbackStub(channel).Submit  # type: ignore[no-untyped-call]

        def call(
            request_id: str, label: int, metadata: tuple[tuple[str, str], ...] = auth
        ) -> fb.FeedbackResponse:
            labels = [fb.Label(request_id=request_id, int_label=label)]
            answer: fb.FeedbackResponse = submit(
                fb.FeedbackRequest(model_name=model, labels=labels), metadata=metadata, timeout=30
            )
            return answer

        answer = call(unlabelled, 1)
        assert (answer.written, answer.repeated) == (1, 0) and answer.feedback_id
        assert (call(unlabelled, 1).written, call(unlabelled, 1).repeated) == (0, 1)
        for request_id, label, metadata, code in (
            ("never-answered", 1, auth, grpc.StatusCode.NOT_FOUND),
            (unlabelled, 0, auth, grpc.StatusCode.ALREADY_EXISTS),
            (labelled, 7, auth, grpc.StatusCode.INVALID_ARGUMENT),
            (labelled, 1, (), grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request_id, label, metadata)
            error: Any = refused.value
            assert error.code() == code, (request_id, error.details())
            assert dict(error.trailing_metadata() or ())["x-request-id"]


def test_late_labels_for_1000_requests_give_the_live_accuracy_computed_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None, split: datasets.Split
) -> None:
    settings = use(make_settings(tmp_path / "state", serve_workers=2, api_key=SECRET, grpc_port=free_port()),
                   monkeypatch)  # fmt: skip
    service = LocalService(settings)
    url = f"/v2/models/{settings.model_name}/feedback"
    try:
        assert training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=FAST).version == "1"
        with httpx.Client(
            base_url=service.url, headers={"authorization": f"Bearer {SECRET}"}, timeout=60
        ) as client:
            answers = answer_requests(client, split)
            unlabelled = client.post("/predict", json={"records": [datasets.records(split.holdout.head(1),
                                     datasets.BREAST_CANCER)[0]]}).headers["x-request-id"]  # fmt: skip
            answered_until = time.time()
            labels = [{"request_id": rid, "label": true if i < REQUESTS - WRONG else 1 - predicted}
                      for i, (rid, predicted, true) in enumerate(answers)]  # fmt: skip
            for start in range(0, REQUESTS, 250):  # the ground truth comes later, in four calls
                response = client.post(url, json={"labels": labels[start : start + 250]})
                assert response.status_code == 200, response.text
                assert response.json()["written"] == 250 and response.headers["x-request-id"]
            again = client.post(url, json={"labels": labels[:10]})  # a retried call: nothing written twice
            assert again.status_code == 200 and (again.json()["written"], again.json()["repeated"]) == (0, 10)
            assert len(list(read_records(settings.feedback_log_dir))) == REQUESTS

            bad = refusals(client, url, answers[0][0], unlabelled, answers[0][2])  # its label: the true one
            for case, (response, status, words) in bad.items():
                assert response.status_code == status, (case, response.status_code, response.text)
                assert words in response.json()["error"] and response.headers["x-request-id"], case
            assert len(list(read_records(settings.feedback_log_dir))) == REQUESTS  # refusals wrote nothing

        # The monitor's hour starts after the last answer: only the late labels bring those requests in.
        hand = sum(
            predicted == given["label"] for (_, predicted, _), given in zip(answers, labels, strict=True)
        )
        result = monitor_flow(window_minutes=60, until=answered_until + 3601)
        run = connect(settings).get_run(result["monitor_run"])
        assert run.data.metrics["rows"] == 0
        assert run.data.metrics["live.labelled_rows"] == REQUESTS
        assert run.data.metrics["live.accuracy"] == pytest.approx(hand / REQUESTS, abs=1e-12)
        assert any(b.startswith("live accuracy") for b in result["breaches"]), result["breaches"]
        grpc_feedback(settings.grpc_port or 0, settings.model_name, unlabelled, answers[0][0])
        assert len(list(read_records(settings.feedback_log_dir))) == REQUESTS + 1
    finally:
        service.stop()
    assert verify(settings.feedback_log_dir).ok and verify(settings.inference_log_dir).ok
    print(f"\nfeedback: {REQUESTS} late labels; live accuracy {hand / REQUESTS:.4f} by hand and by the "
          f"monitor; breaches {result['breaches']}")  # fmt: skip
