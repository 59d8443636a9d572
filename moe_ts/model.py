"""The released forecaster (docs/ARCHITECTURE.md §2): the network + Hugging Face I/O + `forecast`.

`MoiraiMoEModel` is what `save_pretrained` writes and `from_pretrained` loads. It composes the layers
below it and is imported by none of them: the network (`moe_ts.network`), the sampler
(`moe_ts.forecasting`) and the checkpoint I/O (`moe_ts.io.hub`). Training losses are in
`moe_ts.objectives`.
"""
from __future__ import annotations

from typing import Any

from huggingface_hub import ModelHubMixin

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.device import place_model, resolve_device, resolve_dtype
from moe_ts.forecast_output import ForecastOutput
from moe_ts.forecasting import forecast
from moe_ts.uni2ts.decoding import forecast_group
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

    def predict_df(self, df: Any, prediction_length: int, **kwargs: Any) -> Any:
        """Forecast a long pandas DataFrame (item_id, timestamp, target) into one (item_id, timestamp, mean,
        quantile columns); see `moe_ts.io.dataframe.predict_df` for the arguments."""
        from moe_ts.io.dataframe import predict_df

        return predict_df(self, df, prediction_length, **kwargs)

    def forecast(self, contexts: object, prediction_length: int, **kwargs: Any) -> ForecastOutput:
        """Probabilistic forecast; see `moe_ts.forecasting.forecast` for the arguments."""
        return forecast(self, contexts, prediction_length, **kwargs)

    def forecast_group(self, group: object, prediction_length: int, **kwargs: Any) -> ForecastOutput:
        """Forecast a group of series jointly (any-variate; converted uni2ts models); see
        `moe_ts.uni2ts.decoding.forecast_group` for the arguments."""
        return forecast_group(self, group, prediction_length, **kwargs)
