"""The released MSFT-finetuned forecaster (docs/ARCHITECTURE.md §9): `MSFTNetwork` + Hugging Face I/O + `forecast`.

Its folder holds config.json ({"model_type": "msft", "model": ModelConfig, "msft": MSFTConfig}), model.safetensors (the
pretrained weights under `base.`, the MSFT modules beside them) and a model card.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from huggingface_hub import ModelHubMixin

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.forecast_output import ForecastOutput
from moe_ts.io.hub import HubIOMixin, released_class_keywords
from moe_ts.msft.network import MSFTConfig, MSFTNetwork
from moe_ts.msft.forecasting import msft_forecast
from moe_ts.network import MoiraiMoENetwork


MSFT_MODEL_TYPE = "msft"


@dataclass
class MSFTModelConfig:
    """The pretrained model's config and what MSFT added."""

    model: ModelConfig = field(default_factory=ModelConfig)
    msft: MSFTConfig = field(default_factory=MSFTConfig)
    model_type: Literal["msft"] = MSFT_MODEL_TYPE  # what `moe_ts.io.loading` dispatches on


def _model_without_runtime_keys(data: dict) -> dict:
    """config.json with its `model` section without the keys that became runtime choices."""
    data = dict(data)
    if isinstance(data.get("model"), dict):
        data["model"], _ = drop_runtime_keys(data["model"], "config.json")
    return data


class MSFTModel(
    MSFTNetwork,
    HubIOMixin,
    ModelHubMixin,
    **released_class_keywords(MSFTModelConfig, "mixture-of-experts", "msft", migrate=_model_without_runtime_keys,
                              repo_url=None),
):
    """A pretrained network with MSFT's multi-scale modules; `forecast` combines the scales' forecasts."""

    def __init__(self, config: MSFTModelConfig) -> None:
        config = self.typed_config(config)
        super().__init__(MoiraiMoENetwork(config.model), config.msft)

    @classmethod
    def from_network(cls, base: MoiraiMoENetwork, msft: MSFTConfig) -> "MSFTModel":
        """An MSFT model around a copy of `base`'s weights (the MSFT modules freshly initialised)."""
        model = cls(MSFTModelConfig(model=base.config, msft=msft))
        missing, unexpected = model.base.load_state_dict(base.state_dict(), strict=False)
        if missing or unexpected:  # only the centroids' buffer/parameter status may differ, not the names
            raise ValueError(f"base weights do not match: missing {missing}, unexpected {unexpected}")
        return model

    def forecast(self, contexts: object, prediction_length: int, **kwargs: Any) -> ForecastOutput:
        """Probabilistic forecast; see `moe_ts.msft.forecasting.msft_forecast` for the arguments."""
        return msft_forecast(self, contexts, prediction_length, **kwargs)
