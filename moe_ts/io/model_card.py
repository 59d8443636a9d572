"""The model card (README.md) written beside config.json and model.safetensors: every family's card goes
through `render_card` (never huggingface_hub's "[More Information Needed]" stub).

A Jinja template rendered by huggingface_hub's ModelCard (YAML metadata: license, pipeline_tag, tags,
library_name, datasets); `export` fills `eval_table` with the evaluations' results.md (local paths removed, the
decoding named) and `training` / `training_data` from the folder's training.json, so a released folder carries
its numbers; `origin` says what the folder was made from and whose weights it carries (`moe_ts.io.provenance`),
`intended_use` what it is for.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from huggingface_hub import ModelCard
from huggingface_hub.hub_mixin import DEFAULT_MODEL_CARD

# The sections a point forecaster's card shares (distilled student, Time-LLM): training record, use, evaluation.
POINT_FORECASTER_CARD_TAIL = """## Training

{{ training | default("No training record was found beside these weights.", true) }}

## Use

```python
from moe_ts.io.loading import load_model

model = load_model("{{ repo_id | default("THIS_FOLDER", true) }}")
out = model.forecast([context_array], prediction_length=96)
out.mean  # [B, H] point forecasts
```

## Evaluation

{{ eval_table | default("Not evaluated yet: run `moe-ts eval --checkpoint THIS_FOLDER`.", true) }}
"""

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name | default("moe-ts model", true) }}

{% if origin %}{{ origin }}{% else %}A Moirai-MoE-style sparse mixture-of-experts time-series forecaster trained with
[moe-ts]({{ repo_url | default("https://github.com/moe-ts/moe-ts", true) }}).{% endif %}

{{ architecture | default("", true) }}

## Intended use

{% if intended_use %}{{ intended_use }}{% else %}Zero-shot probabilistic forecasting of univariate time series (one value per regular time step, missing
values allowed): sample paths, quantiles and means for a horizon of a few patches. Research and
benchmarking; check the evaluation below on data like yours before relying on it.{% endif %}

## Training

{{ training | default("No training record was found beside these weights.", true) }}

{{ training_data | default("", true) }}

## Use

```python
from {{ model_module | default("moe_ts.model", true) }} import {{ model_class | default("MoiraiMoEModel", true) }}

model = {{ model_class | default("MoiraiMoEModel", true) }}.from_pretrained("{{ repo_id | default("THIS_FOLDER_OR_REPO_ID", true) }}")
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
    """One paragraph of sizes for the card (an MSFT model: its pretrained network's, plus the scales)."""
    cfg = getattr(model.config, "model", model.config)
    moe = cfg.moe
    if not hasattr(model, "num_parameters") or cfg is not model.config:
        total = sum(p.numel() for p in model.parameters())
        msft = getattr(model.config, "msft", None)
        scales = f" MSFT: {getattr(msft, 'num_scales', '?')} scales." if msft is not None else ""
        return (f"Patch size {cfg.patch_size}, up to {cfg.max_seq_len} patches; d_model {cfg.d_model}, "
                f"{cfg.num_layers} layers, {cfg.num_heads} heads; MoE FFN with {moe.num_experts} experts, top-"
                f"{moe.top_k}, d_ff {moe.d_ff}, {moe.gate} gate.{scales} Parameters: {total:,}.")
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


def render_card(model: Any, template: str, card_data: Any, repo_url: str | None, **kwargs: Any) -> ModelCard:
    """The card of `model`: its family's template (ours when the family set none), `license` and `datasets`
    into the YAML metadata, every other keyword into the template."""
    if template == DEFAULT_MODEL_CARD:
        template = MODEL_CARD_TEMPLATE
    kwargs.setdefault("model_class", type(model).__name__)
    kwargs.setdefault("model_module", type(model).__module__)
    try:
        kwargs.setdefault("architecture", architecture_summary(model))
    except AttributeError:  # a family without a MoE config (the student sets its own)
        pass
    card_data = copy.deepcopy(card_data)
    for key in ("license", "datasets"):
        value = kwargs.pop(key, None)
        if value:
            setattr(card_data, key, value)
    return ModelCard.from_template(card_data=card_data, template_str=template, repo_url=repo_url, **kwargs)


DECODING_LINE = "- decoding:"


def eval_tables(results: list[tuple[str, str]]) -> str:
    """The card's evaluation section from several (name, results.md text) pairs, each under its own heading and
    naming the decoding that produced its numbers (older results.md files did not record it)."""
    parts = []
    for name, text in results:
        table = card_eval_table(text)
        if DECODING_LINE not in text:
            table = (f"{DECODING_LINE} not recorded (evaluated before moe-ts wrote it into results.md; "
                     f"`moe-ts eval` decodes with `sample` unless told otherwise)\n" + table)
        parts.append(table if len(results) == 1 else f"### Evaluation `{name}`\n\n{table}")
    return "\n\n".join(parts)
