"""The released MSFT-finetuned forecaster (docs/ARCHITECTURE.md §9): `MSFTNetwork` + Hugging Face I/O + `forecast`.

Its folder holds config.json ({"model_type": "msft", "model": ModelConfig, "msft": MSFTConfig}), model.safetensors (the
pretrained weights under `base.`, the MSFT modules beside them) and a model card.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from huggingface_hub import ModelHubMixin

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.typed_config import from_dict, to_dict
from moe_ts.forecast_output import ForecastOutput
from moe_ts.io.hub import HubIOMixin
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


def _encode(cfg: MSFTModelConfig) -> dict:
    return to_dict(cfg)


def _decode(data: dict) -> MSFTModelConfig:
    data = dict(data)
    if isinstance(data.get("model"), dict):
        data["model"], _ = drop_runtime_keys(data["model"], "config.json")
    return from_dict(MSFTModelConfig, data, "config")


class MSFTModel(
    MSFTNetwork,
    HubIOMixin,
    ModelHubMixin,
    library_name="moe-ts",
    tags=["time-series", "forecasting", "mixture-of-experts", "msft"],
    pipeline_tag="time-series-forecasting",
    license="other",
    coders={MSFTModelConfig: (_encode, _decode)},
):
    """A pretrained network with MSFT's multi-scale modules; `forecast` combines the scales' forecasts."""

    def __init__(self, config: MSFTModelConfig) -> None:
        if isinstance(config, dict):
            config = _decode(config)
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
