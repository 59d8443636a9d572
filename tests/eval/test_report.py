"""results.md's aggregate lines: the geometric mean, and the same mean without single-instance datasets."""
from __future__ import annotations

import math

from eval.metrics import MetricValue
from eval.report import aggregate, single_instance_datasets, suite_markdown
from eval.runner import MODEL, SNAIVE, SuiteResult, TaskResult


def _task(dataset: str, instances: int, model_mae: float, snaive_mae: float, horizon: int = 12) -> TaskResult:
    return TaskResult(
        suite="monash", dataset=dataset, display_name=dataset.title(), horizon=horizon, context_length=1000,
        num_series=instances, num_instances=instances, sampling="full protocol", full_protocol=True,
        metrics={MODEL: {"MAE": MetricValue(model_mae)}, SNAIVE: {"MAE": MetricValue(snaive_mae)}}, seconds={},
    )


def _suite() -> SuiteResult:
    # ratios model / Seasonal Naive: 0.5, 0.8 (many instances), 2.0 and 1.5 (one instance each)
    return SuiteResult("monash", [_task("alpha", 300, 1.0, 2.0), _task("beta", 40, 4.0, 5.0),
                                  _task("births", 1, 6.0, 3.0), _task("spots", 1, 3.0, 2.0)])


def test_single_instance_datasets_counts_instances_over_all_horizons():
    suite = _suite()
    suite.tasks.append(_task("spots", 1, 3.0, 2.0, horizon=24))  # two horizons, one instance each: two in all
    assert single_instance_datasets(suite) == ["births"]


def test_aggregate_excludes_the_named_datasets():
    suite = _suite()
    everything = aggregate(suite, "MAE")
    assert math.isclose(everything.value, (0.5 * 0.8 * 2.0 * 1.5) ** 0.25)
    rest = aggregate(suite, "MAE", exclude=["births", "spots"])
    assert math.isclose(rest.value, (0.5 * 0.8) ** 0.5)
    assert rest.datasets_used == ["alpha", "beta"]


def test_markdown_states_the_mean_without_single_instance_datasets():
    md, aggs = suite_markdown(_suite(), "m")
    headline = next(a for a in aggs if a.role == MODEL)
    assert math.isclose(headline.value, (0.5 * 0.8 * 2.0 * 1.5) ** 0.25)  # the protocol's aggregate is unchanged
    expected = f"{(0.5 * 0.8) ** 0.5:.4f}"
    line = next(s for s in md.splitlines() if "single forecast instance" in s)
    assert line.strip() == f"- 2 of the 4 rest on a single forecast instance (Births, Spots); without them: {expected}"


def test_markdown_has_no_such_line_without_single_instance_datasets():
    suite = SuiteResult("monash", [_task("alpha", 300, 1.0, 2.0), _task("beta", 40, 4.0, 5.0)])
    md, _ = suite_markdown(suite, "m")
    assert "single forecast instance" not in md
    only_singles = SuiteResult("monash", [_task("births", 1, 6.0, 3.0)])  # nothing would be left to average
    assert "single forecast instance" not in suite_markdown(only_singles, "m")[0]
