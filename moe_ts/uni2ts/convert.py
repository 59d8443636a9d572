"""uni2ts Moirai-MoE checkpoints → our model config and state dict (docs/ARCHITECTURE.md §2, "Converting uni2ts").

Reads a uni2ts `MoiraiMoEModule` folder (config.json + model.safetensors, as Salesforce's
`moirai-moe-1.0-R-*` releases and uni2ts' `save_pretrained` write it) with plain json/safetensors:
uni2ts itself is never imported. Every source tensor is mapped; anything else, a missing tensor or a
wrong shape fails naming the tensor.

    uni2ts                                              ours
    in_proj / res_proj .weight [1, D, P], .bias [1, D]  patch_proj.in_proj / res_proj (patch-size index 0)
    feat_proj.weight [1, D, D], .bias [1, D]            patch_proj.out_proj
    encoder.layers.i.norm1 / norm2                      layers.i.attn_norm / ffn_norm
    encoder.layers.i.self_attn.{q,k,v,out}_proj         layers.i.attn.{q,k,v,out}_proj
    encoder.layers.i.self_attn.{q,k}_norm               layers.i.attn.{q,k}_norm
    encoder.layers.i.ffn.experts.e.fc_gate [F, D]       layers.i.moe.experts.w_gate[e] = weightᵀ [D, F]
    encoder.layers.i.ffn.experts.e.fc1 [F, D]           layers.i.moe.experts.w_up[e]   = weightᵀ [D, F]
    encoder.layers.i.ffn.experts.e.fc2 [D, F]           layers.i.moe.experts.w_down[e] = weightᵀ [F, D]
    encoder.centroid [L, E, D] float64                  layers.i.moe.gate.centroids [E, D] (float32, select farthest)
    encoder.norm                                        final_norm
    param_proj.proj.<name> .weight [1, n·P, D]          head.proj.<name> (`moe_ts.distributions.uni2ts_key_map`)
    encoder.layers.i.self_attn.var_attn_bias.emb [2, H] layers.i.attn.var_bias (any-variate inputs; `variate_bias`)

Compatibility settings written into the config: centroid gate with `select: farthest` (uni2ts ranks
experts by the largest distance), softmax over the top-2 distances, `missing_values: zero_raw`
(uni2ts feeds a missing value as raw 0 before standardising), RMSNorm eps 1e-5, RoPE base 10000 on
half of each head (uni2ts' `partial_factor=(0, 0.5)`), min_scale 1e-5, and `time_ids: observed`
(a series' leading fully-missing patches share time id 0 with its first observed patch, as uni2ts'
forecaster numbers them), `variate_bias: true` (for one variate the bias adds the same number to every
logit of a query, so univariate forecasts do not depend on it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.distributions import NORMAL_FIXED_SCALE, NUM_COMPONENTS, uni2ts_key_map

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
UNI2TS_HEAD_DIM = 64  # uni2ts' TransformerEncoder: num_heads = d_model // 64
UNI2TS_TOP_K = 2  # uni2ts' MoEFeedForward: num_experts_per_token=2
MIXTURE_COMPONENTS = (
    "uni2ts.distribution.student_t.StudentTOutput",
    "uni2ts.distribution.normal.NormalFixedScaleOutput",
    "uni2ts.distribution.negative_binomial.NegativeBinomialOutput",
    "uni2ts.distribution.log_normal.LogNormalOutput",
)
KNOWN_CONFIG_KEYS = {"distr_output", "d_model", "d_ff", "num_layers", "patch_sizes", "max_seq_len",
                     "attn_dropout_p", "dropout_p", "scaling"}


class Uni2tsConversionError(ValueError):
    """A uni2ts checkpoint that cannot be converted exactly (the message names the file or tensor)."""


@dataclass
class Conversion:
    """The result of mapping a uni2ts checkpoint: our config and our state dict."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]


def read_uni2ts_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json (dict) and model.safetensors (tensors) of a local uni2ts checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Uni2tsConversionError(f"{folder}: uni2ts checkpoint folder not found")
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise Uni2tsConversionError(f"{path}: missing (a uni2ts checkpoint folder holds {CONFIG_NAME} and "
                                        f"{WEIGHTS_NAME})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Uni2tsConversionError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise Uni2tsConversionError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise Uni2tsConversionError(f"{weights_path}: truncated or corrupt safetensors file ({err})") from err
    return config, tensors


def _check_distr_output(distr: object, where: str) -> None:
    """The head must be uni2ts' four-component mixture in our order (Student-t, normal 1e-3, NB, log-normal)."""
    if not isinstance(distr, dict) or distr.get("_target_") != "uni2ts.distribution.mixture.MixtureOutput":
        target = distr.get("_target_") if isinstance(distr, dict) else distr
        raise Uni2tsConversionError(f"{where}: distr_output is {target!r}; only uni2ts' MixtureOutput converts")
    targets = tuple(c.get("_target_") if isinstance(c, dict) else c for c in distr.get("components", []))
    if targets != MIXTURE_COMPONENTS:
        raise Uni2tsConversionError(f"{where}: distr_output components {list(targets)} differ from "
                                    f"{list(MIXTURE_COMPONENTS)}")
    scale = distr["components"][1].get("scale", NORMAL_FIXED_SCALE)
    if scale != NORMAL_FIXED_SCALE:
        raise Uni2tsConversionError(f"{where}: NormalFixedScaleOutput scale {scale} != {NORMAL_FIXED_SCALE}")


def model_config_from_uni2ts(config: dict, tensors: dict[str, torch.Tensor], where: str = CONFIG_NAME,
                            weights: str = WEIGHTS_NAME) -> ModelConfig:
    """Our `ModelConfig` for a uni2ts MoiraiMoEModule config (plus the weights, for the expert count)."""
    unknown = sorted(set(config) - KNOWN_CONFIG_KEYS)
    if unknown:
        raise Uni2tsConversionError(f"{where}: unknown key(s) {unknown} (not a uni2ts Moirai-MoE config)")
    missing = sorted({"distr_output", "d_model", "d_ff", "num_layers", "patch_sizes", "max_seq_len"} - set(config))
    if missing:
        raise Uni2tsConversionError(f"{where}: missing key(s) {missing} (not a uni2ts Moirai-MoE config)")
    _check_distr_output(config["distr_output"], where)
    if not config.get("scaling", True):
        raise Uni2tsConversionError(f"{where}: scaling=false (no standardisation) is not supported")
    patch_sizes = config["patch_sizes"]
    if not isinstance(patch_sizes, list) or len(patch_sizes) != 1:
        raise Uni2tsConversionError(f"{where}: patch_sizes {patch_sizes} must hold exactly one size (Moirai-MoE)")
    if "encoder.centroid" not in tensors:
        raise Uni2tsConversionError(f"{weights}: no tensor 'encoder.centroid' (a dense Moirai 1.x checkpoint? "
                                    "only Moirai-MoE converts)")
    d_model = int(config["d_model"])
    num_layers, num_experts, centroid_d = tensors["encoder.centroid"].shape
    if (num_layers, centroid_d) != (int(config["num_layers"]), d_model):
        raise Uni2tsConversionError(f"{weights}: tensor 'encoder.centroid' has shape "
                                    f"{tuple(tensors['encoder.centroid'].shape)}, config says "
                                    f"[{config['num_layers']}, E, {d_model}]")
    moe = MoEConfig(num_experts=num_experts, top_k=UNI2TS_TOP_K, d_ff=int(config["d_ff"]), gate="centroid",
                    centroid_select="farthest", weighting="softmax_topk", aux_loss_coef=0.0, z_loss_coef=0.0)
    return ModelConfig(patch_size=int(patch_sizes[0]), max_seq_len=int(config["max_seq_len"]), d_model=d_model,
                       num_layers=num_layers, num_heads=max(1, d_model // UNI2TS_HEAD_DIM), moe=moe,
                       rope_base=10000.0, norm_eps=1e-5, min_scale=1e-5, missing_values="zero_raw",
                       time_ids="observed", variate_bias=True)


def _key_map(cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """uni2ts key → (our key, how): how is 'copy', 'index0' (drop the patch-size dim) or 'expert:<w>:<e>'."""
    keys: dict[str, tuple[str, str]] = {}
    for src, ours in (("in_proj", "in_proj"), ("res_proj", "res_proj"), ("feat_proj", "out_proj")):
        for kind in ("weight", "bias"):
            keys[f"{src}.{kind}"] = (f"patch_proj.{ours}.{kind}", "index0")
    for i in range(cfg.num_layers):
        src, ours = f"encoder.layers.{i}.", f"layers.{i}."
        keys[src + "norm1.weight"] = (ours + "attn_norm.weight", "copy")
        keys[src + "norm2.weight"] = (ours + "ffn_norm.weight", "copy")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj", "q_norm", "k_norm"):
            keys[f"{src}self_attn.{name}.weight"] = (f"{ours}attn.{name}.weight", "copy")
        keys[f"{src}self_attn.var_attn_bias.emb.weight"] = (f"{ours}attn.var_bias.weight", "copy")
        for e in range(cfg.moe.num_experts):
            for fc, w in (("fc_gate", "w_gate"), ("fc1", "w_up"), ("fc2", "w_down")):
                keys[f"{src}ffn.experts.{e}.{fc}.weight"] = (f"{ours}moe.experts.{w}", f"expert:{e}")
    keys["encoder.norm.weight"] = ("final_norm.weight", "copy")
    for src, ours in uni2ts_key_map().items():
        keys[src] = ("head." + ours, "index0")
    return keys


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our tensors' shapes, computed from the config (no model is built here)."""
    d, p, f, e, h = cfg.d_model, cfg.patch_size, cfg.moe.d_ff, cfg.moe.num_experts, cfg.head_dim
    shapes = {"patch_proj.in_proj.weight": (d, p), "patch_proj.in_proj.bias": (d,),
              "patch_proj.res_proj.weight": (d, p), "patch_proj.res_proj.bias": (d,),
              "patch_proj.out_proj.weight": (d, d), "patch_proj.out_proj.bias": (d,), "final_norm.weight": (d,)}
    for i in range(cfg.num_layers):
        ours = f"layers.{i}."
        shapes.update({ours + "attn_norm.weight": (d,), ours + "ffn_norm.weight": (d,),
                       ours + "attn.q_norm.weight": (h,), ours + "attn.k_norm.weight": (h,),
                       ours + "moe.experts.w_gate": (e, d, f), ours + "moe.experts.w_up": (e, d, f),
                       ours + "moe.experts.w_down": (e, f, d), ours + "moe.gate.centroids": (e, d),
                       ours + "attn.var_bias.weight": (2, cfg.num_heads)})
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{ours}attn.{name}.weight"] = (d, d)
    for ours in uni2ts_key_map().values():
        name, kind = ours[len("proj."):].rsplit(".", 1)
        rows = NUM_COMPONENTS * p if name == "weights_logits" else p
        shapes["head." + ours] = (rows, d) if kind == "weight" else (rows,)
    return shapes


def map_uni2ts_state_dict(tensors: dict[str, torch.Tensor], cfg: ModelConfig,
                          where: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    """Our state dict from uni2ts tensors.

    Raises Uni2tsConversionError naming the first unexpected, missing or wrongly shaped tensor.
    """
    key_map = _key_map(cfg)
    unexpected = sorted(set(tensors) - set(key_map) - {"encoder.centroid"})
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise Uni2tsConversionError(f"{where}: cannot map tensor {unexpected[0]!r}{more}")
    missing = sorted(set(key_map) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Uni2tsConversionError(f"{where}: tensor {missing[0]!r} is missing{more}")
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    for src, (ours, how) in key_map.items():
        t = tensors[src]
        if how == "index0":
            if t.dim() < 1 or t.shape[0] != 1:
                raise Uni2tsConversionError(f"{where}: tensor {src!r} has shape {tuple(t.shape)}; expected a "
                                            "leading patch-size dimension of 1")
            out[ours] = t[0]
        elif how == "copy":
            out[ours] = t
        else:
            experts.setdefault(ours, {})[int(how.split(":")[1])] = t.t()  # nn.Linear [out, in] → [in, out]
    for ours, per_expert in experts.items():
        out[ours] = torch.stack([per_expert[e] for e in range(cfg.moe.num_experts)])
    for i in range(cfg.num_layers):  # uni2ts casts the float64 centroids to the activations' dtype
        out[f"layers.{i}.moe.gate.centroids"] = tensors["encoder.centroid"][i].to(torch.float32)
    shapes = _expected_shapes(cfg)
    for ours, t in out.items():
        if tuple(t.shape) != shapes[ours]:
            src = next((s for s, (o, _) in key_map.items() if o == ours), "encoder.centroid")
            raise Uni2tsConversionError(f"{where}: tensor {src!r} gives {ours} shape {tuple(t.shape)}, "
                                        f"expected {shapes[ours]} from the config")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise Uni2tsConversionError(f"{where}: a tensor mapped to {ours} holds NaN or inf")
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def convert_uni2ts_folder(folder: str | Path) -> Conversion:
    """Map a local uni2ts Moirai-MoE checkpoint folder to our config and state dict."""
    config, tensors = read_uni2ts_folder(folder)
    cfg = model_config_from_uni2ts(config, tensors, str(Path(folder) / CONFIG_NAME), str(Path(folder) / WEIGHTS_NAME))
    return Conversion(cfg, map_uni2ts_state_dict(tensors, cfg, str(Path(folder) / WEIGHTS_NAME)))
