"""The released forecaster (docs/ARCHITECTURE.md §2): the network + Hugging Face I/O + `forecast`.

`MoiraiMoEModel` is what `save_pretrained` writes and `from_pretrained` loads. It composes the layers
below it and is imported by none of them: the network (`moe_ts.network`), the sampler
(`moe_ts.forecasting`) and the checkpoint I/O (`moe_ts.io.hub`). Training losses are in
`moe_ts.objectives`.
"""
from __future__ import annotations

from typing import Any, Sequence

from huggingface_hub import ModelHubMixin

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.device import place_model, resolve_device, resolve_dtype
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.forecasting import forecast
from moe_ts.group_decoding import forecast_group, forecast_with_covariates
from moe_ts.io.hub import HubIOMixin, released_class_keywords
from moe_ts.io.model_card import MODEL_CARD_TEMPLATE
from moe_ts.network import MoiraiMoENetwork


def _without_runtime_keys(data: dict) -> dict:
    """config.json without the keys that became runtime choices (`moe_ts.config.drop_runtime_keys`)."""
    return drop_runtime_keys(data, "config.json")[0]


class MoiraiMoEModel(
    MoiraiMoENetwork,
    HubIOMixin,
    ModelHubMixin,
    **released_class_keywords(ModelConfig, "mixture-of-experts", migrate=_without_runtime_keys,
                              model_card_template=MODEL_CARD_TEMPLATE),
):
    """Decoder-only sparse-MoE forecaster: `forward` gives hidden states, `forecast` sample paths."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(self.typed_config(config))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *, device: Any = None, dtype: Any = None,
                        **kwargs: Any) -> "MoiraiMoEModel":
        """Load a folder or Hub repo id (`moe_ts.io.hub.HubIOMixin.from_pretrained`), then place it: `device`
        auto / cpu / cuda / cuda:N and `dtype` float32 / bfloat16 / float64 (`moe_ts.device`; default: the CPU,
        as saved). A device this machine lacks is refused before anything loads."""
        target = None if device is None else resolve_device(device)
        if dtype is not None:
            resolve_dtype(dtype, target or resolve_device("cpu"))
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return model if target is None and dtype is None else place_model(model, target or "cpu", dtype)

    def predict_df(self, df: Any, prediction_length: int, *, id_column: str = "item_id",
                   timestamp_column: str = "timestamp", target: str = "target", freq: str | None = None,
                   date_format: str | None = None, dayfirst: bool | None = None,
                   quantile_levels: Sequence[float] = DEFAULT_QUANTILES, num_samples: int = 100,
                   seed: int | None = None, batch_size: int = 64, context_length: int | None = None,
                   decode: str = "sample", progress: bool = False, independent_series: bool = True,
                   past_covariates: Sequence[str] = (), known_covariates: Sequence[str] = (),
                   future_df: Any = None) -> Any:
        """Forecast a long or wide pandas DataFrame into one of item_id, timestamp, mean and the quantile columns
        "q0.1" .. "q0.9", with covariate columns by name (known ones' horizon values in `future_df`); the arguments
        are `moe_ts.io.dataframe.predict_df`'s (pandas is imported on use)."""
        from moe_ts.io.dataframe import predict_df

        return predict_df(self, df, prediction_length, id_column=id_column, timestamp_column=timestamp_column,
                          target=target, freq=freq, date_format=date_format, dayfirst=dayfirst,
                          quantile_levels=quantile_levels, num_samples=num_samples, seed=seed, batch_size=batch_size,
                          context_length=context_length, decode=decode, progress=progress,
                          independent_series=independent_series, past_covariates=past_covariates,
                          known_covariates=known_covariates, future_df=future_df)

    def forecast(self, contexts: object, prediction_length: int, *, past_covariates: Any = None,
                 known_covariates: Any = None, **kwargs: Any) -> ForecastOutput:
        """Probabilistic forecast; see `moe_ts.forecasting.forecast` for the arguments. With covariates
        ({name: values per series}; past-only ones over the context, known ones over the context and the horizon)
        each series is decoded with its covariates as one group (`moe_ts.group_decoding.forecast_with_covariates`)."""
        if past_covariates or known_covariates:
            return forecast_with_covariates(self, contexts, prediction_length, past_covariates=past_covariates,
                                            known_covariates=known_covariates, **kwargs)
        return forecast(self, contexts, prediction_length, **kwargs)

    def forecast_group(self, group: object, prediction_length: int, **kwargs: Any) -> ForecastOutput:
        """Forecast a group of series jointly (any-variate), with covariates if given; see
        `moe_ts.group_decoding.forecast_group` for the arguments."""
        return forecast_group(self, group, prediction_length, **kwargs)
