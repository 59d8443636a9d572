"""Write the uni2ts covariate fixture: uni2ts' own one-step and second-step distributions for groups with known
(`feat_dynamic_real`) and past-only (`past_feat_dynamic_real`) covariates, on the fixture model of
`tools/uni2ts_golden.py` (`tests/data/uni2ts_moe_tiny`, loaded, not rebuilt).

`tests/moe_ts/uni2ts/test_covariates_uni2ts.py` matches `decode="uni2ts"` group decoding with covariates
(`moe_ts/covariates.py`, `moe_ts/uni2ts/decoding.py`) to it at 1e-5: the row layout, the time ids of the known
covariates' horizon patches, their statistics (context and horizon values) and causality by time id. Runs in the
uni2ts venv (install commands in `tools/uni2ts_golden.py`), from the repository root:

    /work/uni2ts-venv/bin/python tools/uni2ts_golden_covariates.py --out tests/data

It writes `uni2ts_moe_tiny_covariates.safetensors`: per group b (2 groups of 2 targets, 1 known covariate, 2
past-only covariates; context 100 points, horizon 3 patches) the inputs, the probes, and uni2ts' distribution at
each target's last context token (`step0.*`) and, with every target's first forecast patch fixed to the probes, at
those patches (`step1.*`): the mixture parameters, the scaler's loc / scale and the log-probability of a probe
patch.

Shape legend: B groups, Vt targets, Vk known, Vp past-only, T context, H horizon, P patch size.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

PATCH = 16
T, HP = 100, 3  # context points (not whole patches: left padding), horizon patches
PARAM_NAMES = ("weights_logits", "t_df", "t_loc", "t_scale", "normal_loc", "nb_total_count", "nb_logits",
               "ln_loc", "ln_scale")


def make_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(T + HP * PATCH)
    b = 2
    known = np.stack([np.sin(2 * np.pi * t / 24 + g) * 3 + 10 * g for g in range(b)])[:, None]  # [B, 1, T+H]
    targets = np.stack([[known[g, 0, :T] * (v + 1) + rng.normal(0, 0.5, T) + 5 * v for v in range(2)]
                        for g in range(b)])  # [B, 2, T]
    past = rng.normal(0, 1, (b, 2, T)).cumsum(-1)
    targets[1, 0, 10:20] = np.nan
    past[0, 1, 50:60] = np.nan
    probes = np.nanmean(targets[..., -PATCH:], -1, keepdims=True) + rng.normal(0, 1, (b, 2, PATCH))
    probes2 = probes + rng.normal(0, 1, probes.shape)
    return {k: v.astype(np.float32) for k, v in dict(targets=targets, known=known, past=past, probes=probes,
                                                       probes2=probes2).items()}


def run(module, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    from uni2ts.model.moirai_moe import MoiraiMoEForecast

    targets, known, past = inputs["targets"], inputs["known"], inputs["past"]
    b, vt, _ = targets.shape
    fc = MoiraiMoEForecast(prediction_length=HP * PATCH, target_dim=vt, feat_dynamic_real_dim=known.shape[1],
                           past_feat_dynamic_real_dim=past.shape[1], context_length=T, module=module,
                           patch_size=PATCH, num_samples=1)

    def btv(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
        obs = ~np.isnan(x)
        return torch.from_numpy(np.where(obs, x, 0.0).astype(np.float32)), torch.from_numpy(obs)

    (tgt, tgt_obs), (kn, kn_obs), (ps, ps_obs) = btv(targets), btv(known), btv(past)
    n = math.ceil(T / PATCH)
    out: dict[str, torch.Tensor] = {}
    for step in (0, 1):
        captured: dict[str, object] = {}
        hooks = [module.param_proj.register_forward_hook(lambda _m, _a, o: captured.__setitem__("params", o)),
                 module.scaler.register_forward_hook(lambda _m, _a, o: captured.__setitem__("loc_scale", o))]
        with torch.no_grad():
            target, obs, sample_id, time_id, variate_id, pred_mask = fc._convert(
                PATCH, tgt, tgt_obs, torch.zeros(b, T, dtype=torch.bool), feat_dynamic_real=kn,
                observed_feat_dynamic_real=kn_obs, past_feat_dynamic_real=ps, past_observed_feat_dynamic_real=ps_obs)
            if step == 0:
                at = torch.arange(vt) * n + n - 1
                probes = inputs["probes"]
            else:
                at = vt * n + torch.arange(vt) * HP  # each target's first future token (variate-major)
                target[:, at] = torch.from_numpy(inputs["probes"])
                pred_mask[:, at] = False
                probes = inputs["probes2"]
            distr = module(target, obs, sample_id, time_id, variate_id, pred_mask, torch.full_like(time_id, PATCH))
            full = torch.zeros(target.shape)
            full[:, at] = torch.from_numpy(probes)
            log_prob = distr.log_prob(full)[:, at]
        for h in hooks:
            h.remove()
        params = captured["params"]
        comps = params["components"]
        flat = [params["weights_logits"], comps[0]["df"], comps[0]["loc"], comps[0]["scale"], comps[1]["loc"],
                comps[2]["total_count"], comps[2]["logits"], comps[3]["loc"], comps[3]["scale"]]
        for name, t in zip(PARAM_NAMES, flat):
            out[f"step{step}.{name}"] = t[:, at].contiguous()
        loc, scale = captured["loc_scale"]
        out[f"step{step}.loc"] = loc[:, at, 0].contiguous()
        out[f"step{step}.scale"] = scale[:, at, 0].contiguous()
        out[f"step{step}.log_prob"] = log_prob.contiguous()
        out[f"step{step}.time_id"] = time_id[:, at].contiguous()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file
    from uni2ts.model.moirai_moe import MoiraiMoEModule

    out = Path(args.out)
    module = MoiraiMoEModule.from_pretrained(str(out / "uni2ts_moe_tiny")).eval()
    inputs = make_inputs(np.random.default_rng(0))
    tensors = {f"input.{k}": torch.from_numpy(v) for k, v in inputs.items()}
    tensors.update({f"uni2ts.{k}": v for k, v in run(module, inputs).items()})
    save_file(tensors, str(out / "uni2ts_moe_tiny_covariates.safetensors"))
    print(f"wrote {out / 'uni2ts_moe_tiny_covariates.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
