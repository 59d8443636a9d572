"""The model card (README.md) written beside config.json and model.safetensors.

A Jinja template rendered by huggingface_hub's ModelCard (YAML metadata: license, pipeline_tag, tags,
library_name, datasets); `export` fills `eval_table` with the evaluation's results.md (local paths removed)
and `training` / `training_data` from the folder's training.json, so a released folder carries its numbers.
"""
from __future__ import annotations

import re

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name | default("moe-ts model", true) }}

{% if origin %}{{ origin }}{% else %}A Moirai-MoE-style sparse mixture-of-experts time-series forecaster trained with
[moe-ts]({{ repo_url | default("https://github.com/moe-ts/moe-ts", true) }}).{% endif %}

{{ architecture | default("", true) }}

## Intended use

Zero-shot probabilistic forecasting of univariate time series (one value per regular time step, missing
values allowed): sample paths, quantiles and means for a horizon of a few patches. Research and
benchmarking; check the evaluation below on data like yours before relying on it.

## Training

{{ training | default("No training record was found beside these weights.", true) }}

{{ training_data | default("", true) }}

## Use

```python
from moe_ts.model import MoiraiMoEModel

model = MoiraiMoEModel.from_pretrained("{{ repo_id | default("THIS_FOLDER_OR_REPO_ID", true) }}")
out = model.forecast([context_array], prediction_length=48, num_samples=100)
out.samples, out.quantiles, out.mean
forecasts = model.predict_df(frame, prediction_length=48)  # long DataFrame: item_id, timestamp, target
```

## Evaluation

{{ eval_table | default("Not evaluated yet: run `moe-ts eval` then `moe-ts export` to put the results table here.", true) }}

## Limitations

- Univariate only: covariates and cross-series information are not used.
- Forecast quality degrades for horizons much longer than the context the model was trained with, and for
  frequencies or domains absent from its training data.
- A series shorter than one patch is left-padded with missing values; its forecast rests on very little.
- Forecasts are samples from a learned distribution: intervals can be miscalibrated on unfamiliar data.
"""

def architecture_summary(model) -> str:
    """One paragraph of sizes for the card."""
    cfg = model.config
    moe = cfg.moe
    return (
        f"Patch size {cfg.patch_size}, up to {cfg.max_seq_len} patches; d_model {cfg.d_model}, {cfg.num_layers} layers, "
        f"{cfg.num_heads} heads; MoE FFN with {moe.num_experts} experts, top-{moe.top_k}, d_ff {moe.d_ff}, "
        f"{moe.gate} gate. Parameters: {model.num_parameters():,} total, {model.num_parameters(active=True):,} active per token."
    )


def card_eval_table(results_md: str) -> str:
    """An evaluation's results.md without the lines and path prefixes that only make sense on our machine."""
    keep = [("##" + line if line.startswith("#") else line)  # its headings sit under the card's "## Evaluation"
            for line in results_md.splitlines() if not line.startswith(("- command:", "- written"))]
    text = "\n".join(keep)
    text = re.sub(r"- checkpoint: `[^`]*`", "- checkpoint: these weights", text)
    return re.sub(r"(?<![\w.:])(?:~|/)(?:[\w.\-]+/)+", "", text)  # absolute folder prefixes -> file names


def training_data_summary(info: dict | None) -> str:
    """The pretraining datasets named in a training record."""
    names = (info or {}).get("datasets") or []
    if not names:
        return ""
    how = {True: "evaluation test windows removed, zero-shot sets left out",
           False: "evaluation data INCLUDED (`--include-eval`): its benchmark numbers are not zero-shot"}
    note = how.get((info or {}).get("exclude_eval"), "")
    return (f"Pretraining corpus (`moe-ts prepare`{'; ' + note if note else ''}): "
            + ", ".join(f"`{n}`" for n in names) + ".")
