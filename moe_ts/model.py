"""The released forecaster (docs/ARCHITECTURE.md §2): the network + Hugging Face I/O + `forecast`.

`MoiraiMoEModel` is what `save_pretrained` writes and `from_pretrained` loads. It composes the layers
below it and is imported by none of them: the network (`moe_ts.network`), the sampler
(`moe_ts.forecasting`) and the checkpoint I/O (`moe_ts.io.hub`). Training losses are in
`moe_ts.objectives`.
"""
from __future__ import annotations

import copy
from typing import Any

from huggingface_hub import ModelCard, ModelHubMixin

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.forecast_output import ForecastOutput
from moe_ts.forecasting import forecast
from moe_ts.uni2ts.decoding import forecast_group
from moe_ts.io.hub import HubIOMixin, released_class_keywords
from moe_ts.io.model_card import MODEL_CARD_TEMPLATE, architecture_summary
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

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """The card template filled with this model's sizes (and `eval_table`, `training`, ... when given).

        `license` and `datasets` go into the card's YAML metadata.
        """
        kwargs.setdefault("architecture", architecture_summary(self))
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        for key in ("license", "datasets"):
            if kwargs.get(key):
                setattr(card_data, key, kwargs.pop(key))
        kwargs.pop("license", None), kwargs.pop("datasets", None)
        return ModelCard.from_template(card_data=card_data, template_str=self._hub_mixin_info.model_card_template,
                                       repo_url=self._hub_mixin_info.repo_url, **kwargs)

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
