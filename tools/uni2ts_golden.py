"""Write the uni2ts golden fixture: a small Moirai-MoE with random weights and uni2ts' own outputs on fixed inputs.

The fixture proves `moe-ts convert --from uni2ts` (`moe_ts/uni2ts/convert.py`) without uni2ts in CI:
`tests/moe_ts/uni2ts/test_convert.py` converts the checkpoint written here and matches uni2ts' one-step
predictive distribution case by case. A regenerated fixture is a reviewed change.

uni2ts 2.0.0 runs in its own virtual environment (its pins clash with ours; see README "Converting
uni2ts checkpoints"). Exact install commands, on the CPU machine (Python 3.11):

    python3.11 -m venv /work/uni2ts-venv
    printf 'torch==2.13.0\\n' > /tmp/uni2ts-constraints.txt
    /work/uni2ts-venv/bin/pip install -c /tmp/uni2ts-constraints.txt torch==2.13.0 'einops==0.7.*' \\
        'gluonts~=0.14.3' 'hydra-core==1.3.*' 'jaxtyping~=0.2.24' 'jax[cpu]' lightning 'numpy~=1.26' \\
        'scipy~=1.11' safetensors orjson multiprocess python-dotenv huggingface_hub
    /work/uni2ts-venv/bin/pip install --no-deps uni2ts==2.0.0

Then, from the repository root (the script imports nothing of moe-ts):

    /work/uni2ts-venv/bin/python tools/uni2ts_golden.py --out tests/data

It writes `uni2ts_moe_tiny/` (uni2ts' own `save_pretrained` folder: config.json + model.safetensors)
and `uni2ts_moe_tiny_cases.safetensors` + `uni2ts_moe_tiny_cases.json`. Each case is a batch of series
(NaN = missing; a series shorter than the case's context length is left-padded, `past_is_pad`, as
GluonTS' instance splitter does) run through `MoiraiMoEForecast._convert` and `MoiraiMoEModule.forward`
with missing values entering as raw 0 (no GluonTS imputation). Recorded per case, for the first
forecast patch (the distribution at the last context token): the domain-mapped mixture parameters,
the scaler's loc and scale, and the log-probability of three fixed patches y (original scale). The
`decode` entry holds uni2ts' second and third decoding steps on the clean contexts with two fixed patches
fed back (its forecaster's loop with the draws replaced), for `decode="uni2ts"`. The `group` entry holds
two multivariate groups of three series (`target_dim=3`, any-variate packing) and each variate's one-step
distribution, plus its second decoding step with every variate's first forecast patch fixed to the group's
probes, for `forecast_group`.

Shape legend: B series, T context length, P patch size, K mixture components, Y probe patches.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

PATCH = 16
D_MODEL = 128  # uni2ts fixes num_heads = d_model // 64: two heads
D_FF = 8  # keeps 2 layers x 32 experts small (the fixture is about 1.3 MB)
NUM_LAYERS = 2
SEED = 0
PARAM_NAMES = ("weights_logits", "t_df", "t_loc", "t_scale", "normal_loc", "nb_total_count", "nb_logits",
               "ln_loc", "ln_scale")


def build_module():
    """A MoiraiMoEModule with the released models' structure and random weights (norms and centroids too)."""
    from uni2ts.distribution import (LogNormalOutput, MixtureOutput, NegativeBinomialOutput,
                                     NormalFixedScaleOutput, StudentTOutput)
    from uni2ts.model.moirai_moe import MoiraiMoEModule

    torch.manual_seed(SEED)
    distr = MixtureOutput([StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()])
    module = MoiraiMoEModule(distr_output=distr, d_model=D_MODEL, d_ff=D_FF, num_layers=NUM_LAYERS,
                             patch_sizes=(PATCH,), max_seq_len=512, attn_dropout_p=0.0, dropout_p=0.0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name or name.endswith("_norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # norms start at ones: make a swapped mapping visible
            elif "var_attn_bias" in name:
                p.copy_(torch.randn_like(p))
        module.encoder.centroid.copy_(torch.randn_like(module.encoder.centroid))  # torch.empty in uni2ts
    return module.eval()


def _series(rng: np.random.Generator, length: int, level: float, amp: float) -> np.ndarray:
    t = np.arange(length)
    return (level + amp * np.sin(2 * np.pi * t / 24) + 0.3 * amp * rng.standard_normal(length)).astype(np.float32)


def make_cases(rng: np.random.Generator) -> dict[str, dict]:
    """Each case: list of 1-D series (NaN = missing), the context length T, and probe patches [B, Y, P]."""
    cases: dict[str, dict] = {}
    cases["clean"] = {"series": [_series(rng, 128, lv, amp) for lv, amp in [(0.0, 1.0), (50.0, 5.0), (-3.0, 0.2)]],
                      "context_length": 128}
    missing = [_series(rng, 128, lv, amp) for lv, amp in [(10.0, 2.0), (1.0, 1.0), (100.0, 30.0)]]
    missing[0][[5, 17, 40, 41, 90]] = np.nan
    missing[1][32:48] = np.nan  # one whole interior patch
    missing[2][rng.choice(128, 30, replace=False)] = np.nan
    cases["interior_missing"] = {"series": missing, "context_length": 128}
    cases["short"] = {"series": [_series(rng, n, lv, amp) for n, lv, amp in [(40, 5.0, 1.0), (16, 0.5, 0.1),
                                                                            (100, 20.0, 4.0)]],
                      "context_length": 128}
    lead = [_series(rng, 128, lv, amp) for lv, amp in [(3.0, 1.0), (-20.0, 2.0), (0.0, 1.0)]]
    lead[0][:40] = np.nan  # two fully missing leading patches, then a partial one
    lead[1][:16] = np.nan
    lead[2][:64] = np.nan
    lead[2][70] = np.nan
    cases["leading_missing"] = {"series": lead, "context_length": 128}
    for case in cases.values():
        b = len(case["series"])
        last = np.array([np.nanmean(s[-PATCH:]) for s in case["series"]], dtype=np.float32)
        spread = np.array([np.nanstd(s) + 0.1 for s in case["series"]], dtype=np.float32)
        probes = last[:, None, None] + spread[:, None, None] * rng.standard_normal((b, 3, PATCH)).astype(np.float32)
        probes[:, 2] = np.abs(probes[:, 2]) + 1e-3  # one probe patch in the NB / log-normal support
        case["probes"] = probes
    return cases


@contextlib.contextmanager
def _captured_outputs(module) -> Iterator[dict[str, object]]:
    """Record the outputs of uni2ts' distribution projection ("params") and scaler ("loc_scale") in the block."""
    captured: dict[str, object] = {}
    hooks = [module.param_proj.register_forward_hook(lambda _m, _a, o: captured.__setitem__("params", o)),
             module.scaler.register_forward_hook(lambda _m, _a, o: captured.__setitem__("loc_scale", o))]
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()


def _distribution_at(captured: dict[str, object], index) -> dict[str, torch.Tensor]:
    """The captured mixture parameters (PARAM_NAMES) and the scaler's loc / scale at token(s) `index`."""
    params = captured["params"]
    comps = params["components"]
    flat = [params["weights_logits"], comps[0]["df"], comps[0]["loc"], comps[0]["scale"], comps[1]["loc"],
            comps[2]["total_count"], comps[2]["logits"], comps[3]["loc"], comps[3]["scale"]]
    out = {name: t[:, index].contiguous() for name, t in zip(PARAM_NAMES, flat)}
    loc, scale = captured["loc_scale"]
    out.update(loc=loc[:, index, 0].contiguous(), scale=scale[:, index, 0].contiguous())
    return out


def run_uni2ts(module, series: list[np.ndarray], context_length: int, probes_byp: np.ndarray) -> dict[str, torch.Tensor]:
    """uni2ts' one-step predictive distribution at the last context token, for a left-padded batch."""
    from uni2ts.model.moirai_moe import MoiraiMoEForecast

    fc = MoiraiMoEForecast(prediction_length=PATCH, target_dim=1, feat_dynamic_real_dim=0, past_feat_dynamic_real_dim=0,
                           context_length=context_length, module=module, patch_size=PATCH, num_samples=1)
    b = len(series)
    past = np.zeros((b, context_length), dtype=np.float32)
    is_pad = np.ones((b, context_length), dtype=bool)
    for i, s in enumerate(series):
        past[i, context_length - len(s):] = s
        is_pad[i, context_length - len(s):] = False
    observed = ~np.isnan(past) & ~is_pad
    past = np.where(observed, past, 0.0).astype(np.float32)  # missing values enter as raw 0 (zero_raw)
    with _captured_outputs(module) as captured, torch.no_grad():
        target, obs, sample_id, time_id, variate_id, pred_mask = fc._convert(
            PATCH, torch.from_numpy(past)[..., None], torch.from_numpy(observed)[..., None],
            torch.from_numpy(is_pad))
        patch_size = torch.full_like(time_id, PATCH)
        distr = module(target, obs, sample_id, time_id, variate_id, pred_mask, patch_size)
        last = math.ceil(context_length / PATCH) - 1
        n = target.shape[1]
        log_probs = []
        for y in range(probes_byp.shape[1]):
            full = torch.zeros(b, n, PATCH)
            full[:, last] = torch.from_numpy(probes_byp[:, y])
            log_probs.append(distr.log_prob(full)[:, last])
    out = _distribution_at(captured, last)
    out["log_prob"] = torch.stack(log_probs, dim=1).contiguous()  # [B, Y, P]
    out["time_id"] = time_id[:, : last + 1].contiguous()
    return out


def run_uni2ts_decode(module, series: list[np.ndarray], context_length: int, fed_bkp: np.ndarray,
                      probes_bp: np.ndarray) -> dict[str, torch.Tensor]:
    """uni2ts' decoding steps with fixed draws: for k = 1..K, the distribution its forecaster computes after
    assigning the first k forecast patches (`MoiraiMoEForecast.forward`'s loop: assigned tokens leave the
    prediction mask, so the scaler and every token's normalisation include them)."""
    from uni2ts.model.moirai_moe import MoiraiMoEForecast

    b, num_fed, _ = fed_bkp.shape
    fc = MoiraiMoEForecast(prediction_length=(num_fed + 1) * PATCH, target_dim=1, feat_dynamic_real_dim=0,
                           past_feat_dynamic_real_dim=0, context_length=context_length, module=module,
                           patch_size=PATCH, num_samples=1)
    past = np.stack(series).astype(np.float32)
    observed = ~np.isnan(past)
    past = np.where(observed, past, 0.0).astype(np.float32)
    ctx_tokens = math.ceil(context_length / PATCH)
    out: dict[str, torch.Tensor] = {}
    for k in range(1, num_fed + 1):
        with _captured_outputs(module) as captured, torch.no_grad():
            target, obs, sample_id, time_id, variate_id, pred_mask = fc._convert(
                PATCH, torch.from_numpy(past)[..., None], torch.from_numpy(observed)[..., None],
                torch.zeros(past.shape, dtype=torch.bool))
            for j in range(k):
                target[:, ctx_tokens + j] = torch.from_numpy(fed_bkp[:, j])
                pred_mask[:, ctx_tokens + j] = False
            distr = module(target, obs, sample_id, time_id, variate_id, pred_mask, torch.full_like(time_id, PATCH))
            at = ctx_tokens + k - 1
            full = torch.zeros(target.shape)
            full[:, at] = torch.from_numpy(probes_bp)
            log_prob = distr.log_prob(full)[:, at]
        out.update({f"step{k}.{name}": t for name, t in _distribution_at(captured, at).items()})
        out[f"step{k}.log_prob"] = log_prob.contiguous()
    return out


def run_uni2ts_group(module, groups_bvt: np.ndarray, probes_bvp: np.ndarray) -> dict[str, torch.Tensor]:
    """uni2ts' one-step distribution of each variate of B multivariate groups (target_dim = V, any-variate)."""
    from uni2ts.model.moirai_moe import MoiraiMoEForecast

    b, v, t_len = groups_bvt.shape
    fc = MoiraiMoEForecast(prediction_length=PATCH, target_dim=v, feat_dynamic_real_dim=0, past_feat_dynamic_real_dim=0,
                           context_length=t_len, module=module, patch_size=PATCH, num_samples=1)
    past = np.ascontiguousarray(groups_bvt.transpose(0, 2, 1))  # [B, T, V]
    observed = ~np.isnan(past)
    past = np.where(observed, past, 0.0).astype(np.float32)
    with _captured_outputs(module) as captured, torch.no_grad():
        target, obs, sample_id, time_id, variate_id, pred_mask = fc._convert(
            PATCH, torch.from_numpy(past), torch.from_numpy(observed), torch.zeros(b, t_len, dtype=torch.bool))
        distr = module(target, obs, sample_id, time_id, variate_id, pred_mask, torch.full_like(time_id, PATCH))
        n = math.ceil(t_len / PATCH)
        last = torch.arange(v) * n + n - 1
        full = torch.zeros(target.shape)
        full[:, last] = torch.from_numpy(probes_bvp)
        log_prob = distr.log_prob(full)[:, last]
    out = _distribution_at(captured, last)
    out.update(log_prob=log_prob.contiguous(),
               time_id=time_id[:, last].contiguous(), variate_id=variate_id[:, last].contiguous())
    return out


def run_uni2ts_group_decode(module, groups_bvt: np.ndarray, fed_bvp: np.ndarray,
                            probes_bvp: np.ndarray) -> dict[str, torch.Tensor]:
    """uni2ts' second decoding step of each variate of B groups, the first forecast patch of every variate
    fixed to `fed_bvp` (its forecaster's loop with the draw replaced: those tokens leave the prediction mask)."""
    from uni2ts.model.moirai_moe import MoiraiMoEForecast

    b, v, t_len = groups_bvt.shape
    fc = MoiraiMoEForecast(prediction_length=2 * PATCH, target_dim=v, feat_dynamic_real_dim=0,
                           past_feat_dynamic_real_dim=0, context_length=t_len, module=module, patch_size=PATCH,
                           num_samples=1)
    past = np.ascontiguousarray(groups_bvt.transpose(0, 2, 1))
    observed = ~np.isnan(past)
    past = np.where(observed, past, 0.0).astype(np.float32)
    with _captured_outputs(module) as captured, torch.no_grad():
        target, obs, sample_id, time_id, variate_id, pred_mask = fc._convert(
            PATCH, torch.from_numpy(past), torch.from_numpy(observed), torch.zeros(b, t_len, dtype=torch.bool))
        first_future = v * math.ceil(t_len / PATCH) + torch.arange(v) * 2  # future tokens are variate-major too
        target[:, first_future] = torch.from_numpy(fed_bvp)
        pred_mask[:, first_future] = False
        distr = module(target, obs, sample_id, time_id, variate_id, pred_mask, torch.full_like(time_id, PATCH))
        full = torch.zeros(target.shape)
        full[:, first_future] = torch.from_numpy(probes_bvp)
        log_prob = distr.log_prob(full)[:, first_future]
    out = _distribution_at(captured, first_future)
    out.update(log_prob=log_prob.contiguous())
    return out


def make_groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two groups of three related series (shared seasonality, different levels), with missing values."""
    t = np.arange(128)
    groups = np.empty((2, 3, 128), dtype=np.float32)
    for g in range(2):
        common = np.sin(2 * np.pi * t / (12 + 12 * g)) + 0.2 * rng.standard_normal(128)
        for v, (lv, amp) in enumerate([(0.0, 1.0), (20.0, 5.0), (-4.0, 0.5)]):
            groups[g, v] = lv + amp * (common + 0.3 * rng.standard_normal(128))
    groups[0, 1, 30:50] = np.nan
    groups[1, 2, :24] = np.nan  # one variate starts late (its leading patch is missing; others are observed)
    groups[1, 0, [3, 77, 101]] = np.nan
    spread = np.nanstd(groups, axis=2, keepdims=True) + 0.1
    probes = np.nanmean(groups[..., -PATCH:], axis=2, keepdims=True) + spread * rng.standard_normal((2, 3, PATCH))
    return groups, probes.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data", help="folder for the fixture (default tests/data)")
    args = parser.parse_args(argv)
    import uni2ts
    from safetensors.torch import save_file

    out = Path(args.out)
    module = build_module()
    module.save_pretrained(out / "uni2ts_moe_tiny")
    readme = out / "uni2ts_moe_tiny" / "README.md"
    if readme.exists():
        readme.unlink()  # huggingface_hub's generic card: nothing the fixture needs
    rng = np.random.default_rng(SEED)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict] = {}
    for name, case in make_cases(rng).items():
        series, t_len = case["series"], case["context_length"]
        padded = np.full((len(series), t_len), np.nan, dtype=np.float32)
        for i, s in enumerate(series):
            padded[i, t_len - len(s):] = s
        tensors[f"{name}.context"] = torch.from_numpy(padded)
        tensors[f"{name}.length"] = torch.tensor([len(s) for s in series], dtype=torch.int64)
        tensors[f"{name}.probes"] = torch.from_numpy(case["probes"])
        for key, value in run_uni2ts(module, series, t_len, case["probes"]).items():
            tensors[f"{name}.uni2ts.{key}"] = value
        meta[name] = {"context_length": t_len, "num_series": len(series)}
    # Decoding steps 2 and 3 with fixed draws (the clean contexts; fed patches = the first two probes).
    clean = [tensors["clean.context"][i].numpy() for i in range(3)]
    fed = tensors["clean.probes"][:, :2].numpy()
    for key, value in run_uni2ts_decode(module, clean, 128, fed, tensors["clean.probes"][:, 2].numpy()).items():
        tensors[f"decode.uni2ts.{key}"] = value
    decode_meta = {"context": "clean", "fed": "clean.probes[:, :2]", "probe": "clean.probes[:, 2]", "steps": [2, 3]}
    groups, group_probes = make_groups(rng)
    tensors["group.context"] = torch.from_numpy(groups)
    tensors["group.probes"] = torch.from_numpy(group_probes)
    for key, value in run_uni2ts_group(module, groups, group_probes).items():
        tensors[f"group.uni2ts.{key}"] = value
    second_probes = (group_probes + rng.standard_normal(group_probes.shape)).astype(np.float32)
    tensors["group.probes2"] = torch.from_numpy(second_probes)
    for key, value in run_uni2ts_group_decode(module, groups, group_probes, second_probes).items():
        tensors[f"group.uni2ts.step1.{key}"] = value
    save_file(tensors, str(out / "uni2ts_moe_tiny_cases.safetensors"))
    info = {"uni2ts_version": uni2ts.__version__, "torch_version": torch.__version__, "seed": SEED,
            "command": "tools/uni2ts_golden.py --out " + str(args.out), "patch_size": PATCH, "cases": meta,
            "decode": decode_meta, "group": {"groups": 2, "variates": 3, "context_length": 128},
            "params": list(PARAM_NAMES)}
    (out / "uni2ts_moe_tiny_cases.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out / 'uni2ts_moe_tiny'} and {len(meta)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
