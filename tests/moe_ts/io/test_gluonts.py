"""A moe-ts model as a GluonTS predictor (issue 25, deliverable 6): `predict(ListDataset)` yields SampleForecasts
equal to the model's own forecasts, and GluonTS' evaluation runs it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

gluonts = pytest.importorskip("gluonts")
from gluonts.dataset.common import ListDataset  # noqa: E402
from gluonts.evaluation import Evaluator, make_evaluation_predictions  # noqa: E402
from gluonts.model.forecast import SampleForecast  # noqa: E402

from moe_ts.forecast_harness import independent_series  # noqa: E402
from moe_ts.io.gluonts import GluonTSPredictor  # noqa: E402
from moe_ts.model import MoiraiMoEModel  # noqa: E402

TARGETS = [np.sin(np.arange(60) / 4.0) + 2, np.arange(45.0), np.cos(np.arange(33) / 3.0)]
STARTS = ["2024-01-01 00:00", "2023-06-01 05:00", "2024-02-29 23:00"]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return MoiraiMoEModel.from_pretrained(tiny_checkpoint)


def dataset() -> ListDataset:
    return ListDataset([{"target": t, "start": s, "item_id": f"s{i}"} for i, (t, s) in enumerate(zip(TARGETS, STARTS))],
                       freq="h")


def test_predict_yields_the_models_forecasts_as_sample_forecasts(model):
    predictor = GluonTSPredictor(model, prediction_length=6, num_samples=7, seed=3, batch_size=2)
    forecasts = list(predictor.predict(dataset()))
    with independent_series():  # each series its own stream: the same forecast in any chunk of the dataset
        reference = model.forecast(TARGETS, 6, num_samples=7, seed=3, batch_size=64, allow_short_context=True)
    assert len(forecasts) == 3 and all(isinstance(f, SampleForecast) for f in forecasts)
    for i, f in enumerate(forecasts):
        assert f.item_id == f"s{i}" and f.samples.shape == (7, 6)
        assert f.start_date == pd.Period(STARTS[i], freq="h") + len(TARGETS[i])
        np.testing.assert_allclose(f.samples, reference.samples[i], rtol=1e-6)


def test_gluonts_evaluation_runs_the_predictor(model):
    predictor = GluonTSPredictor(model, prediction_length=4, num_samples=8)
    forecast_it, ts_it = make_evaluation_predictions(dataset(), predictor=predictor, num_samples=8)
    metrics, per_item = Evaluator(quantiles=(0.1, 0.5, 0.9))(ts_it, forecast_it, num_series=3)
    assert len(per_item) == 3 and np.isfinite(metrics["MASE"]) and np.isfinite(metrics["mean_wQuantileLoss"])


def test_a_multivariate_entry_is_a_value_error_naming_it(model):
    data = ListDataset([{"target": np.ones((2, 40)), "start": "2024-01-01", "item_id": "mv"}], freq="D",
                       one_dim_target=False)
    with pytest.raises(ValueError, match="entry 0 \\(mv\\).*univariate"):
        list(GluonTSPredictor(model, prediction_length=3).predict(data))


def test_moe_ts_does_not_import_gluonts_until_it_forecasts():
    code = "import sys, moe_ts.model, moe_ts.io.gluonts; print(any(m.startswith('gluonts') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_forecast_takes_a_gluonts_list_dataset_as_its_contexts(tiny_checkpoint):
    import numpy as np
    from gluonts.dataset.common import ListDataset

    from moe_ts.model import MoiraiMoEModel

    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    rng = np.random.default_rng(0)
    targets = [rng.normal(10, 1, 40).astype(np.float32), rng.normal(5, 2, 33).astype(np.float32)]
    data = ListDataset([{"start": "2021-01-01", "target": t} for t in targets], freq="D")
    from_dataset = model.forecast(data, 6, num_samples=4, seed=0)
    from_arrays = model.forecast(targets, 6, num_samples=4, seed=0)
    np.testing.assert_array_equal(from_dataset.samples, from_arrays.samples)
