"""Pure parts of the post-deploy checks: reading /metrics and judging a bake window."""

import pytest

from flows.checks import DeployChecks, bake_verdict, traffic_snapshot


def metrics_text(ok: int, errors: int, under_5ms: int, under_100ms: int) -> str:
    """BentoML's /metrics as it looks, reduced to the samples the bake check reads."""
    total = under_5ms + under_100ms
    request = 'bentoml_service_request_total{{endpoint="/predict",http_response_code="{code}"}} {value}'
    bucket = 'bentoml_service_request_duration_seconds_bucket{{endpoint="/predict",le="{le}"}} {value}'
    return "\n".join(
        [
            "# TYPE bentoml_service_request_total counter",
            request.format(code=200, value=float(ok)),
            request.format(code=500, value=float(errors)),
            "# TYPE bentoml_service_request_duration_seconds histogram",
            bucket.format(le="0.005", value=float(under_5ms)),
            bucket.format(le="0.1", value=float(total)),
            bucket.format(le="+Inf", value=float(total)),
            "",
        ]
    )


BEFORE = traffic_snapshot(metrics_text(ok=100, errors=0, under_5ms=90, under_100ms=10))
CHECKS = DeployChecks(max_error_rate=0.01, bake_p99_ms=50)


def test_snapshot_sums_requests_errors_and_buckets() -> None:
    assert (BEFORE.requests, BEFORE.errors) == (100, 0)
    assert BEFORE.buckets == {0.005: 90, 0.1: 100, float("inf"): 100}


def test_bake_passes_on_fast_clean_traffic() -> None:
    after = traffic_snapshot(metrics_text(ok=300, errors=0, under_5ms=290, under_100ms=10))
    result = bake_verdict(BEFORE, after, 5, CHECKS)
    assert result.passed and result.value == "200 requests, error rate 0.00%, p99 <= 5 ms"


def test_bake_fails_on_errors_or_slowness() -> None:
    errors = traffic_snapshot(metrics_text(ok=290, errors=10, under_5ms=290, under_100ms=10))
    failing = bake_verdict(BEFORE, errors, 5, CHECKS)
    assert not failing.passed and "error rate 5.00%" in failing.value
    slow = traffic_snapshot(metrics_text(ok=300, errors=0, under_5ms=190, under_100ms=110))
    result = bake_verdict(BEFORE, slow, 5, CHECKS)
    assert not result.passed and "p99 <= 100 ms" in result.value


def test_bake_without_traffic_is_not_a_failure() -> None:
    assert bake_verdict(BEFORE, BEFORE, 5, DeployChecks()).passed


def test_deploy_checks_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="probe_seconds"):
        DeployChecks(probe_seconds=3)  # type: ignore[call-arg]
