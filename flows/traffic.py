"""A traffic generator: replay held-out rows against the endpoint, optionally with a chosen drift.

Drifts (``--shift``, repeatable):
* ``feature:+2sd`` moves a numeric feature by two of its standard deviations (``-1.5sd``, ``*1.3`` too);
* ``feature:=value`` replaces a categorical feature by a value (a category never seen in training);
* ``label:<class>=0.9`` resamples the rows so that 90 % of them have that true class.

It writes the ground-truth labels of what it sent (``request_id,row,label``), the file the monitor joins
against the inference log for live metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from models.datasets import DatasetSpec, records

SHIFT = re.compile(r"^(?P<feature>\w+):(?P<op>[+\-*=])(?P<value>[^=]+?)(?P<sd>sd)?$")
BALANCE = re.compile(r"^label:(?P<label>[^=]+)=(?P<share>0?\.\d+|1(\.0)?)$")


@dataclass(frozen=True)
class Shift:
    feature: str
    op: str
    value: str
    in_sd: bool


def parse_shift(text: str) -> Shift:
    match = SHIFT.match(text)
    if not match:
        raise ValueError(f"shift {text!r}: expected feature:+2sd, feature:*1.3 or feature:=value")
    return Shift(match["feature"], match["op"], match["value"], bool(match["sd"]))


def apply_shift(frame: pd.DataFrame, shift: Shift, spec: DatasetSpec) -> pd.DataFrame:
    feature = next((f for f in spec.features if f.name == shift.feature), None)
    if feature is None:
        raise ValueError(f"shift: unknown feature {shift.feature!r}; expected one of {spec.feature_names}")
    shifted = frame.copy()
    if shift.op == "=":
        shifted[shift.feature] = shift.value
        return shifted
    if feature.kind != "numeric":
        raise ValueError(f"shift: {shift.feature!r} is categorical; use {shift.feature}:=<category>")
    amount = float(shift.value) * (float(frame[shift.feature].std()) if shift.in_sd else 1.0)
    column = shifted[shift.feature]
    shifted[shift.feature] = {"+": column + amount, "-": column - amount, "*": column * float(shift.value)}[
        shift.op
    ]
    return shifted


def rebalance(frame: pd.DataFrame, spec: DatasetSpec, text: str, rows: int, seed: int) -> pd.DataFrame:
    match = BALANCE.match(text)
    if not match:
        raise ValueError(f"balance {text!r}: expected label:<class>=<share>, e.g. label:1=0.9")
    target = frame[spec.target]
    label = type(target.iloc[0])(match["label"])
    share = float(match["share"])
    chosen, other = frame[target == label], frame[target != label]
    count = round(rows * share)
    return pd.concat(
        [
            chosen.sample(count, replace=True, random_state=seed),
            other.sample(rows - count, replace=True, random_state=seed),
        ]
    ).sample(frac=1, random_state=seed)


def plan_traffic(
    frame: pd.DataFrame, spec: DatasetSpec, rows: int, shifts: list[str], balance: str | None, seed: int = 0
) -> pd.DataFrame:
    """The rows to send, in order: sampled from ``frame``, rebalanced and shifted as asked."""
    planned = (
        rebalance(frame, spec, balance, rows, seed)
        if balance
        else frame.sample(rows, replace=len(frame) < rows, random_state=seed)
    )
    for text in shifts:
        planned = apply_shift(planned, parse_shift(text), spec)
    return planned.reset_index(drop=True)


def replay(
    url: str,
    planned: pd.DataFrame,
    spec: DatasetSpec,
    labels_out: Path,
    batch: int = 1,
    api_key: str | None = None,
    model_name: str | None = None,
) -> int:
    """Send the rows (``batch`` per request) to the model's ``/v2/models/{name}/predict`` (``/predict``, the
    service's default model, without a name); write the labels file; return requests sent."""
    path = f"/v2/models/{model_name}/predict" if model_name else "/predict"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    truth: list[tuple[str, int, object]] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for start in range(0, len(planned), batch):
            chunk = planned.iloc[start : start + batch]
            response = client.post(path, json={"records": records(chunk, spec)})
            response.raise_for_status()
            request_id = response.json()["request_id"]
            truth += [
                (request_id, i, v.item() if isinstance(v, np.generic) else v)
                for i, v in enumerate(chunk[spec.target])
            ]
    labels_out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(truth, columns=["request_id", "row", "label"]).to_csv(labels_out, index=False)
    return -(-len(planned) // batch)
