"""The model card (README.md) written beside config.json and model.safetensors.

A Jinja template rendered by huggingface_hub's ModelCard; `export` fills `eval_table` with the
evaluation's results.md so a released folder carries its numbers.
"""
from __future__ import annotations

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name | default("moe-ts model", true) }}

A Moirai-MoE-style sparse mixture-of-experts time-series forecaster trained with
[moe-ts]({{ repo_url | default("https://github.com/moe-ts/moe-ts", true) }}).

{{ architecture | default("", true) }}

## Use

```python
from moe_ts.model import MoiraiMoEModel

model = MoiraiMoEModel.from_pretrained("THIS_FOLDER_OR_REPO_ID")
out = model.forecast([context_array], prediction_length=48, num_samples=100)
out.samples, out.quantiles, out.mean
```

## Evaluation

{{ eval_table | default("Not evaluated yet: run `moe-ts eval` then `moe-ts export` to put the results table here.", true) }}
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
