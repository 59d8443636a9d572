"""Load any forecaster folder (docs/ARCHITECTURE.md §8): dispatch on config.json's `model_type`.

A MoE model's config.json has no `model_type` (folders written before the student existed have none
either); a distilled student's says `timedistill_mlp`, an MSFT-finetuned model's `msft`, a Time-LLM / Time-DPD model's
`time_llm` (its frozen language model is loaded by name through `transformers`). All load strictly through
`moe_ts.io.hub`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from moe_ts.io.hub import CONFIG_NAME, MOE_MODEL_TYPE, ModelFolderError, check_local_folder, local_folder_type, \
    looks_like_hub_id
from moe_ts.model import MoiraiMoEModel
from moe_ts.msft.model import MSFT_MODEL_TYPE, MSFTModel
from moe_ts.student.model import STUDENT_MODEL_TYPE, MLPForecaster
from moe_ts.timellm.model import TIME_LLM_MODEL_TYPE, TimeLLMModel

FORECASTERS = {MOE_MODEL_TYPE: MoiraiMoEModel, STUDENT_MODEL_TYPE: MLPForecaster, MSFT_MODEL_TYPE: MSFTModel,
               TIME_LLM_MODEL_TYPE: TimeLLMModel}
ReleasedModel = Union[MoiraiMoEModel, MLPForecaster, MSFTModel, TimeLLMModel]


def model_type(folder: str | Path) -> str:
    """The folder's model type (its config.json's `model_type`, default the MoE model); ModelFolderError when
    the folder holds no loadable checkpoint or an unknown type."""
    folder = Path(folder).expanduser()
    check_local_folder(folder)
    kind = local_folder_type(folder)  # a raw uni2ts checkpoint: "convert it first"
    if kind not in FORECASTERS:
        raise ModelFolderError(f"{folder / CONFIG_NAME}: unknown model_type {kind!r} "
                              f"(known: {', '.join(sorted(FORECASTERS))})")
    return kind


def load_model(folder: str | Path) -> ReleasedModel:
    """The forecaster saved in `folder` (MoE model, distilled student, MSFT or Time-LLM model), ready for `forecast`.

    A name that can only be a Hub repo id (`moe_ts.io.hub.looks_like_hub_id`) loads as a MoE model, as
    `MoiraiMoEModel.from_pretrained`; any other missing path is one line at once.
    """
    if looks_like_hub_id(folder):
        return MoiraiMoEModel.from_pretrained(folder)
    return FORECASTERS[model_type(folder)].from_pretrained(folder)
