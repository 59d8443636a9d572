"""Group decoding with covariates against uni2ts itself (fixture by tools/uni2ts_golden_covariates.py; uni2ts not
needed): `decode="uni2ts"` on a converted model with a known and two past-only covariates gives uni2ts' one-step
and second-step distributions of every target to 1e-5 (row layout, time ids, statistics, causality by time id)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli.main import main
from moe_ts.covariates import check_covariates
from moe_ts.model import MoiraiMoEModel
from moe_ts.uni2ts.decoding import group_paths

DATA = Path(__file__).resolve().parents[2] / "data"
CASES = load_file(str(DATA / "uni2ts_moe_tiny_covariates.safetensors"))
PARAMS = ("weights_logits", "t_df", "t_loc", "t_scale", "normal_loc", "nb_total_count", "nb_logits", "ln_loc", "ln_scale")
T, H = 100, 48


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> MoiraiMoEModel:
    out = tmp_path_factory.mktemp("conv") / "model"
    assert main(["convert", "--from", "uni2ts", str(DATA / "uni2ts_moe_tiny"), "--out", str(out)]) == 0
    return MoiraiMoEModel.from_pretrained(out)


def steps_of(model: MoiraiMoEModel, g: int) -> list:
    """Our distributions at both steps, the first forecast patch of every target fixed to the probes."""
    seen = []
    probes = CASES["input.probes"][g]  # [Vt, P]

    def fixed_draw(distr, n):
        seen.append(distr)
        return probes[None, None].expand(n, 1, -1, -1)

    inputs = {k: CASES[f"input.{k}"][g].numpy() for k in ("targets", "known", "past")}
    covariates = check_covariates({f"p{i}": p for i, p in enumerate(inputs["past"])},
                                  {f"k{i}": k for i, k in enumerate(inputs["known"])}, T, H)
    with torch.no_grad():
        group_paths(model, inputs["targets"], 3, 1, draw=fixed_draw, covariates=covariates)  # uni2ts' 3 patches:
    return seen[:2]  # the known covariate's statistics cover all of them


@pytest.mark.parametrize("g", [0, 1])
def test_group_with_covariates_matches_uni2ts_at_both_steps(converted, g):
    for step, distr in enumerate(steps_of(converted, g)):
        for name in PARAMS:
            torch.testing.assert_close(getattr(distr.base.params, name)[0], CASES[f"uni2ts.step{step}.{name}"][g],
                                       atol=1e-5, rtol=0, msg=f"group {g} step {step}: {name}")
        torch.testing.assert_close(distr.loc[0, :, 0], CASES[f"uni2ts.step{step}.loc"][g], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(distr.scale[0, :, 0], CASES[f"uni2ts.step{step}.scale"][g], atol=1e-5, rtol=1e-6)
        probes = CASES["input.probes" if step == 0 else "input.probes2"][g]
        # log-probabilities of around -4 (float32 sums in a different order): relative 1e-5 too
        torch.testing.assert_close(distr.log_prob(probes[None])[0], CASES[f"uni2ts.step{step}.log_prob"][g],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("g", [0, 1])
def test_the_kv_cache_decoders_first_step_is_uni2ts_first_step(converted, g):
    """The cached decoder's prefill (context tokens only: the known horizon enters step by step) gives uni2ts' first
    forecast distribution; later steps differ by design (the context's statistics are kept)."""
    from moe_ts.covariates import pack_group_row
    from moe_ts.group_decoding import GroupDecoder, _normalised_row

    inputs = {k: CASES[f"input.{k}"][g].numpy() for k in ("targets", "known", "past")}
    covariates = check_covariates({f"p{i}": p for i, p in enumerate(inputs["past"])},
                                  {f"k{i}": k for i, k in enumerate(inputs["known"])}, T, H)
    row = pack_group_row(inputs["targets"], covariates, 16, 3, converted.config.time_ids)
    with torch.no_grad():
        normed, loc, scale = _normalised_row(converted, row)
        params = converted.head(GroupDecoder(converted, row, normed, True, 3).prefill())
    for name in PARAMS:
        torch.testing.assert_close(getattr(params, name)[0], CASES[f"uni2ts.step0.{name}"][g], atol=1e-5, rtol=0,
                                   msg=f"group {g}: {name}")
    torch.testing.assert_close(loc[0, :, 0], CASES["uni2ts.step0.loc"][g], atol=1e-5, rtol=1e-6)
