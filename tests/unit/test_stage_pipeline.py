"""The stage runner: stages in order, the first Dropped ends the run, and the per-stage histograms
are fed by one record in TIMED_EVERY (every traced record), the counters by every record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from streams.stages.base import TIMED_EVERY, Ctx, Dropped, DropReason, Pipeline

CTX = Ctx(datetime(2026, 12, 2, tzinfo=UTC))


class Add:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __call__(self, record: Any, ctx: Ctx, /) -> Any:
        return record + self.n


class DropOdd:
    name = "test-drop-odd"

    def __call__(self, record: Any, ctx: Ctx, /) -> Any:
        return Dropped(DropReason.STALE) if record % 2 else record


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_stages_run_in_order_and_every_record_counts_but_one_in_n_is_timed() -> None:
    pipeline = Pipeline("test-pipeline", [Add("test-add-1", 1), DropOdd(), Add("test-add-10", 10)])
    timed_before = sample("itsm_pipeline_stage_seconds_count", stage="test-add-1")
    in_before = sample("itsm_pipeline_records_in_total", stage="test-pipeline")
    runs = 4 * TIMED_EVERY
    results = [pipeline.run(i, CTX) for i in range(runs)]
    assert results[0] == Dropped(DropReason.STALE)  # 0 + 1 is odd: dropped before the last stage
    assert results[1] == 12
    assert sample("itsm_pipeline_records_in_total", stage="test-pipeline") - in_before == runs
    timed = sample("itsm_pipeline_stage_seconds_count", stage="test-add-1") - timed_before
    assert timed == runs // TIMED_EVERY
