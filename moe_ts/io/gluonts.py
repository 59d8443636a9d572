"""A moe-ts model as a GluonTS predictor: `predict(dataset)` yields one `SampleForecast` per series, so GluonTS
evaluation code (`make_evaluation_predictions`, `gluonts.model.evaluate_model`, GIFT-Eval's notebooks) runs a
moe-ts model directly.

    predictor = GluonTSPredictor(load_model("RUN/final"), prediction_length=48, num_samples=100)
    forecasts = list(predictor.predict(list_dataset))      # SampleForecast: samples [S, H], start_date, item_id

GluonTS is imported here only, and only when forecasting (moe_ts does not depend on it). The predictor
duck-types `gluonts.model.predictor.Predictor` (prediction_length, lead_time, predict). Univariate entries only:
a 2-D target (a multivariate entry) is a ValueError naming the entry.
"""
from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator

import numpy as np


class GluonTSPredictor:
    """Forecasts GluonTS dataset entries ({"target", "start", "item_id"?}) with any moe-ts model's `forecast`."""

    def __init__(self, model: Any, prediction_length: int, num_samples: int = 100, batch_size: int = 64,
                 context_length: int | None = None, seed: int | None = 0, decode: str | None = None,
                 independent_series: bool = True) -> None:
        if prediction_length <= 0:
            raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
        self.model = model
        self.prediction_length = prediction_length
        self.lead_time = 0
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.context_length = context_length
        self.seed = seed
        self.decoding = {} if decode is None else {"decode": decode}
        self.independent_series = independent_series  # a series' forecast is the same in any dataset and chunk

    def predict(self, dataset: Iterable[dict], num_samples: int | None = None, **_: Any) -> Iterator[Any]:
        """One `SampleForecast` per entry, in the dataset's order (entries are read `batch_size` at a time)."""
        from gluonts.model.forecast import SampleForecast

        from moe_ts.forecast_harness import independent_series

        entries = iter(dataset)
        done = 0
        while chunk := list(islice(entries, self.batch_size)):
            targets = [self._target(entry, done + i) for i, entry in enumerate(chunk)]
            with independent_series(self.independent_series):
                out = self.model.forecast(targets, self.prediction_length, seed=self.seed, batch_size=self.batch_size,
                                          num_samples=num_samples or self.num_samples, allow_short_context=True,
                                          context_length=self.context_length, **self.decoding)
            for entry, target, samples_sh in zip(chunk, targets, out.samples):
                yield SampleForecast(samples=np.asarray(samples_sh), start_date=entry["start"] + len(target),
                                     item_id=entry.get("item_id"))
            done += len(chunk)

    @staticmethod
    def _target(entry: dict, index: int) -> np.ndarray:
        target = np.asarray(entry["target"], dtype=np.float32)
        if target.ndim != 1:
            raise ValueError(f"dataset entry {index} ({entry.get('item_id', 'no item_id')}): target of shape "
                             f"{target.shape}; the predictor forecasts univariate series (1-D targets)")
        return target
