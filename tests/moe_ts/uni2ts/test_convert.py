"""`moe-ts convert --from uni2ts` against uni2ts' own outputs (fixture by tools/uni2ts_golden.py; uni2ts not needed).

The fixture holds a small uni2ts Moirai-MoE (random weights, uni2ts' own save_pretrained folder) and, per
case, uni2ts 2.0.0's one-step predictive distribution at the last context token: its domain-mapped mixture
parameters, its scaler's loc/scale and the log-probabilities of three probe patches. The converted model must
reproduce them to 1e-5 on every case.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli.convert import CONVERSION_FILE
from cli.main import main
from moe_ts.config import ModelConfig
from moe_ts.uni2ts.convert import (Uni2tsConversionError, convert_uni2ts_folder, map_uni2ts_state_dict,
                                   model_config_from_uni2ts, read_uni2ts_folder)
from moe_ts.distributions import Mixture, ScaledMixture
from moe_ts.forecasting import prepare_decoder
from moe_ts.packing import observed_time_ids, time_causal_mask
from moe_ts.model import MoiraiMoEModel
from moe_ts.packing import PackedLayout, patchify

DATA = Path(__file__).resolve().parents[2] / "data"
SOURCE = DATA / "uni2ts_moe_tiny"
CASES = load_file(str(DATA / "uni2ts_moe_tiny_cases.safetensors"))
CASE_NAMES = list(json.loads((DATA / "uni2ts_moe_tiny_cases.json").read_text())["cases"])
PARAMS = ("weights_logits", "t_df", "t_loc", "t_scale", "normal_loc", "nb_total_count", "nb_logits", "ln_loc", "ln_scale")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> MoiraiMoEModel:
    out = tmp_path_factory.mktemp("conv") / "model"
    assert main(["convert", "--from", "uni2ts", str(SOURCE), "--out", str(out)]) == 0
    return MoiraiMoEModel.from_pretrained(out)


def case_arrays(case: str) -> list:
    context, length = CASES[f"{case}.context"], CASES[f"{case}.length"]
    t_len = context.shape[1]
    return [context[i, t_len - int(n):].numpy() for i, n in enumerate(length)]


@torch.no_grad()
def one_step(model: MoiraiMoEModel, case: str) -> dict[str, torch.Tensor]:
    """Our one-step predictive distribution for a fixture case, in the fixture's layout."""
    decoder, loc, scale = prepare_decoder(model, case_arrays(case))
    params = model.head(decoder.prefill())  # [B, P]
    distr = ScaledMixture(Mixture(params), loc[:, -1], scale[:, -1])
    probes_ybp = CASES[f"{case}.probes"].transpose(0, 1)
    out = {name: getattr(params, name) for name in PARAMS}
    out.update(loc=loc[:, -1, 0], scale=scale[:, -1, 0], log_prob=distr.log_prob(probes_ybp).transpose(0, 1))
    return out


@pytest.mark.parametrize("case", CASE_NAMES)
def test_converted_model_matches_uni2ts(converted, case):
    ours = one_step(converted, case)
    for name, value in ours.items():
        torch.testing.assert_close(value, CASES[f"{case}.uni2ts.{name}"], atol=1e-5, rtol=0, msg=f"{case}: {name}")


def test_fixture_has_the_cases_the_issue_asks_for():
    assert set(CASE_NAMES) >= {"clean", "interior_missing", "short", "leading_missing"}
    assert bool(torch.isnan(CASES["interior_missing.context"]).any())
    assert int(CASES["short.length"].min()) < CASES["short.context"].shape[1]
    assert bool((CASES["leading_missing.uni2ts.time_id"][:, :2] == 0).all())  # leading patches share time id 0


def test_leading_missing_needs_uni2ts_time_ids(converted):
    """With our own numbering (time_ids: position) only the leading-missing case departs from uni2ts."""
    plain = MoiraiMoEModel(ModelConfig(**{**converted.config.__dict__, "time_ids": "position"}))
    plain.load_state_dict(converted.state_dict())
    plain.eval()
    for case in CASE_NAMES:
        err = (one_step(plain, case)["log_prob"] - CASES[f"{case}.uni2ts.log_prob"]).abs().max()
        assert (err > 1e-3) if case == "leading_missing" else (err < 1e-5), (case, float(err))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_observed_time_ids_are_uni2ts_time_ids(case):
    context = CASES[f"{case}.context"]  # every case is left-padded to the same 8 patches as uni2ts saw it
    values, observed = patchify(context, 16)
    sample_id = observed.any(-1).long().cummax(dim=1).values  # padding patches: 0, then the series: 1
    assert torch.equal(observed_time_ids(observed, sample_id), CASES[f"{case}.uni2ts.time_id"])


def test_time_causal_mask_with_positions_is_the_packed_mask():
    """Our own models' forecasting mask is unchanged: with positions as time ids it is PackedLayout's."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        sample_id = torch.sort(torch.randint(0, 4, (3, 12), generator=gen), dim=1).values
        layout = PackedLayout.from_sample_id(sample_id)
        assert torch.equal(time_causal_mask(layout.sample_id, layout.position), layout.attention_mask())


def test_every_source_tensor_is_mapped_or_listed():
    config, tensors = read_uni2ts_folder(SOURCE)
    conversion = convert_uni2ts_folder(SOURCE)
    cfg = conversion.config
    assert (cfg.moe.gate, cfg.moe.centroid_select, cfg.missing_values, cfg.time_ids, cfg.variate_bias) == \
        ("centroid", "farthest", "zero_raw", "observed", True)
    n_src = sum(t.numel() for t in tensors.values())
    assert sum(t.numel() for t in conversion.state_dict.values()) == n_src  # nothing dropped, nothing invented
    # Expert weights are transposed per expert and stacked in expert order.
    torch.testing.assert_close(conversion.state_dict["layers.1.moe.experts.w_down"][5],
                               tensors["encoder.layers.1.ffn.experts.5.fc2.weight"].t())
    torch.testing.assert_close(conversion.state_dict["layers.0.moe.gate.centroids"],
                               tensors["encoder.centroid"][0].float())


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update({"encoder.layers.0.ffn.gate.weight": torch.zeros(32, 128)}),
     "cannot map tensor 'encoder.layers.0.ffn.gate.weight'"),
    (lambda t: t.pop("encoder.layers.1.ffn.experts.31.fc1.weight"),
     "tensor 'encoder.layers.1.ffn.experts.31.fc1.weight' is missing"),
    (lambda t: t.update({"encoder.layers.0.self_attn.q_proj.weight": torch.zeros(128, 64)}),
     "tensor 'encoder.layers.0.self_attn.q_proj.weight' gives layers.0.attn.q_proj.weight shape (128, 64)"),
    (lambda t: t.update({"in_proj.weight": torch.zeros(2, 128, 16)}), "tensor 'in_proj.weight' has shape (2, 128, 16)"),
])
def test_unmappable_tensors_are_refused_by_name(edit, message):
    config, tensors = read_uni2ts_folder(SOURCE)
    cfg = model_config_from_uni2ts(config, tensors)
    edit(tensors)
    with pytest.raises(Uni2tsConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        map_uni2ts_state_dict(tensors, cfg)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(patch_sizes=[8, 16]), "patch_sizes [8, 16] must hold exactly one size"),
    (lambda c: c.update(scaling=False), "scaling=false"),
    (lambda c: c.update(num_heads=4), "unknown key(s) ['num_heads']"),
    (lambda c: c["distr_output"]["components"].pop(), "distr_output components"),
    (lambda c: c["distr_output"]["components"][1].update(scale=0.01), "NormalFixedScaleOutput scale 0.01"),
])
def test_unsupported_configs_are_refused(edit, message):
    config, tensors = read_uni2ts_folder(SOURCE)
    edit(config)
    with pytest.raises(Uni2tsConversionError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        model_config_from_uni2ts(config, tensors)


def test_dense_moirai_is_refused_naming_the_weights(tmp_path):
    src = tmp_path / "dense"
    src.mkdir()
    shutil.copy(SOURCE / "config.json", src / "config.json")
    tensors = load_file(str(SOURCE / "model.safetensors"))
    tensors.pop("encoder.centroid")
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(Uni2tsConversionError, match=f"{src / 'model.safetensors'}: no tensor 'encoder.centroid'"):
        convert_uni2ts_folder(src)


def test_cli_writes_a_credited_folder_and_refuses_a_foreign_one(tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "--from", "uni2ts", str(SOURCE), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "uni2ts" in card and str(SOURCE) in card and "Salesforce" in card and "did not train" in card
    record = json.loads((out / CONVERSION_FILE).read_text())
    assert record["from"] == "uni2ts" and len(record["source_weights_sha256"]) == 64
    assert main(["convert", "--from", "uni2ts", str(SOURCE), "--out", str(out)]) == 0  # ours: replaced
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["convert", "--from", "uni2ts", str(SOURCE), "--out", str(foreign)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written by moe-ts" in err[0]
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("source, message", [
    ("{tmp}/nowhere", "{tmp}/nowhere: uni2ts checkpoint folder not found"),
    ("Salesforce/no-such-model-offline", "Salesforce/no-such-model-offline: not a local folder, and the Hub download"),
    ("{tmp}/empty", "{tmp}/empty/config.json: missing"),
])
def test_bad_sources_are_one_line_errors(source, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    code = main(["convert", "--from", "uni2ts", source.format(tmp=tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message.format(tmp=tmp_path) in err[0], err
    assert not (tmp_path / "out").exists()


def test_uni2ts_decoding_steps_match_uni2ts(converted):
    """decode="uni2ts" with the draws fixed: steps 2 and 3 re-standardise with the fed patches as uni2ts does."""
    from moe_ts.uni2ts.decoding import uni2ts_paths

    fed_bkp = CASES["clean.probes"][:, :2]
    seen = []

    def fixed_draw(distr, n):  # record the step's distribution, feed back the fixture's patch
        seen.append(distr)
        step = len(seen) - 1
        return (fed_bkp[:, step] if step < 2 else torch.zeros_like(fed_bkp[:, 0]))[None].expand(n, -1, -1)

    paths = uni2ts_paths(converted, case_arrays("clean"), horizon_patches=3, num_samples=1, draw=fixed_draw)
    assert torch.equal(paths[:, 0, :32], fed_bkp.reshape(3, 32))
    probe_bp = CASES["clean.probes"][:, 2]
    for k in (1, 2):  # seen[k] is the distribution of forecast patch k+1, after k fed patches
        distr = seen[k]
        ref = {name: CASES[f"decode.uni2ts.step{k}.{name}"] for name in (*PARAMS, "loc", "scale", "log_prob")}
        for name in PARAMS:
            torch.testing.assert_close(getattr(distr.base.params, name), ref[name], atol=1e-5, rtol=0,
                                       msg=f"step {k + 1}: {name}")
        torch.testing.assert_close(distr.loc[:, 0], ref["loc"], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(distr.scale[:, 0], ref["scale"], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(distr.log_prob(probe_bp), ref["log_prob"], atol=1e-5, rtol=0)
    # The re-standardisation matters: the KV-cache decoder keeps the context's statistics and differs.
    assert (seen[2].scale[:, 0] - seen[0].scale[:, 0]).abs().max() > 1e-3


def test_uni2ts_decode_mode_samples_through_forecast(converted):
    arrays = case_arrays("interior_missing")
    out = converted.forecast(arrays, prediction_length=40, num_samples=4, seed=3, decode="uni2ts")
    again = converted.forecast(arrays, prediction_length=40, num_samples=4, seed=3, decode="uni2ts")
    assert out.samples.shape == (3, 4, 40) and bool(torch.isfinite(torch.from_numpy(out.samples)).all())
    assert (out.samples == again.samples).all()
    assert len({tuple(row) for row in out.samples[0, :, 20:].round(4)}) == 4  # paths differ after the first patch


def test_uni2ts_decode_keeps_each_path_with_its_series(converted):
    """Draws [S, B, ...] become rows b·S + s: every path of series b continues series b."""
    from moe_ts.uni2ts.decoding import uni2ts_paths

    def level_draw(distr, n):  # each row's own loc: the series' level, so a mix-up is visible
        return distr.loc[None].expand(n, -1, 16)

    paths = uni2ts_paths(converted, case_arrays("interior_missing"), horizon_patches=2, num_samples=3, draw=level_draw)
    loc = CASES["interior_missing.uni2ts.loc"]
    torch.testing.assert_close(paths[:, :, 0], loc[:, None].expand(-1, 3))
    assert bool((paths[:, :, 16:] == paths[:, :1, 16:]).all())  # identical fed patches, identical continuations



@torch.no_grad()
def group_one_step(model: MoiraiMoEModel, g: int):
    from moe_ts.uni2ts.decoding import _group_step, pack_group

    row = pack_group(CASES["group.context"][g].numpy(), 16)
    n = row["values"].shape[1] // 3
    return row, _group_step(model, row, (torch.arange(3) * n + n - 1)[None])


@pytest.mark.parametrize("g", [0, 1])
def test_group_of_series_matches_uni2ts_any_variate(converted, g):
    """A group of 3 series packed as uni2ts packs them (variate ids, shared time ids, variate bias) matches
    uni2ts' per-variate one-step distribution."""
    row, distr = group_one_step(converted, g)
    n = row["values"].shape[1] // 3
    assert torch.equal(row["time"][0, torch.arange(3) * n + n - 1], CASES["group.uni2ts.time_id"][g])
    for name in PARAMS:
        torch.testing.assert_close(getattr(distr.base.params, name)[0], CASES[f"group.uni2ts.{name}"][g], atol=1e-5,
                                   rtol=0, msg=f"group {g}: {name}")
    torch.testing.assert_close(distr.loc[0, :, 0], CASES["group.uni2ts.loc"][g], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(distr.scale[0, :, 0], CASES["group.uni2ts.scale"][g], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(distr.log_prob(CASES["group.probes"][g][None])[0], CASES["group.uni2ts.log_prob"][g],
                               atol=1e-5, rtol=0)


def test_group_needs_the_variate_bias(converted):
    """Without the converted variate bias (both rows equal) the group no longer matches: the bias is in use."""
    plain = MoiraiMoEModel(converted.config)
    plain.load_state_dict(converted.state_dict())
    with torch.no_grad():
        for layer in plain.layers:
            layer.attn.var_bias.weight.zero_()
    plain.eval()
    _, distr = group_one_step(plain, 0)
    assert (distr.log_prob(CASES["group.probes"][0][None])[0] - CASES["group.uni2ts.log_prob"][0]).abs().max() > 1e-3
    # ... while a univariate series is unaffected by it (one variate: the same bias on every logit).
    torch.testing.assert_close(one_step(plain, "clean")["log_prob"], CASES["clean.uni2ts.log_prob"], atol=1e-5, rtol=0)


def test_forecast_group_samples_jointly(converted):
    from moe_ts.uni2ts.decoding import forecast_group

    group = CASES["group.context"][1].numpy()
    out = forecast_group(converted, group, prediction_length=20, num_samples=4, seed=1)
    again = forecast_group(converted, group, prediction_length=20, num_samples=4, seed=1)
    assert out.samples.shape == (3, 4, 20) and (out.samples == again.samples).all()
    assert bool(torch.isfinite(torch.from_numpy(out.samples)).all())
    with pytest.raises(ValueError, match="one length"):
        forecast_group(converted, [group[0], group[1][:-3]], prediction_length=4)
    own = MoiraiMoEModel(ModelConfig(d_model=64, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match="no variate attention bias"):
        forecast_group(own, group, prediction_length=4)


def test_group_steps_feed_one_patch_per_variate_at_the_next_time(converted):
    from moe_ts.uni2ts.decoding import group_paths

    seen = []

    def level_draw(distr, n):  # feed each variate its own level: a mix-up of variates or paths is visible
        seen.append(distr)
        return distr.loc[None].expand(n, -1, -1, 16)

    paths = group_paths(converted, CASES["group.context"][0].numpy(), horizon_patches=3, num_samples=2, draw=level_draw)
    assert paths.shape == (3, 2, 48)
    torch.testing.assert_close(paths[:, :, 0], CASES["group.uni2ts.loc"][0][:, None].expand(-1, 2))
    assert len(seen) == 3 and seen[1].loc.shape == (2, 3, 1)


@pytest.mark.parametrize("g", [0, 1])
def test_group_second_step_matches_uni2ts(converted, g):
    """forecast_group's decoding with every variate's first patch fixed: step 2 re-standardises each variate
    with its fed patch and lets the variates of a time step see each other, as uni2ts' loop does."""
    from moe_ts.uni2ts.decoding import group_paths

    fed_vp = CASES["group.probes"][g]
    seen = []

    def fixed_draw(distr, n):
        seen.append(distr)
        return fed_vp[None, None].expand(n, 1, -1, -1) if len(seen) == 1 else torch.zeros(n, *distr.loc.shape[:2], 16)

    group_paths(converted, CASES["group.context"][g].numpy(), horizon_patches=2, num_samples=1, draw=fixed_draw)
    distr = seen[1]
    for name in PARAMS:
        torch.testing.assert_close(getattr(distr.base.params, name)[0], CASES[f"group.uni2ts.step1.{name}"][g],
                                   atol=1e-5, rtol=0, msg=f"group {g} step 2: {name}")
    torch.testing.assert_close(distr.loc[0, :, 0], CASES["group.uni2ts.step1.loc"][g], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(distr.scale[0, :, 0], CASES["group.uni2ts.step1.scale"][g], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(distr.log_prob(CASES["group.probes2"][g][None])[0],
                               CASES["group.uni2ts.step1.log_prob"][g], atol=1e-5, rtol=0)


def test_cli_forecasts_a_wide_file_as_one_group(converted, tmp_path, capsys):
    import pandas as pd

    from moe_ts.uni2ts.decoding import forecast_group

    model_dir = tmp_path / "model"
    assert main(["convert", "--from", "uni2ts", str(SOURCE), "--out", str(model_dir)]) == 0
    group = CASES["group.context"][0].numpy()
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=128, freq="h")})
    for v, name in enumerate(["a", "b", "c"]):
        frame[name] = group[v]
    frame.to_csv(tmp_path / "wide.csv", index=False)
    out = tmp_path / "f.csv"
    args = ["forecast", "--checkpoint", str(model_dir), "--input", str(tmp_path / "wide.csv"), "--horizon", "8",
            "--num-samples", "3", "--seed", "2", "--out", str(out)]
    assert main(args + ["--group"]) == 0
    written = pd.read_csv(out)
    assert list(written["item_id"].unique()) == ["a", "b", "c"] and len(written) == 24
    expected = forecast_group(converted, group, prediction_length=8, num_samples=3, seed=2)
    torch.testing.assert_close(torch.tensor(written["mean"].to_numpy()), torch.tensor(expected.mean.reshape(-1)),
                               atol=1e-4, rtol=1e-5, check_dtype=False)
    frame["c"] = frame["c"].where(frame.index >= 5)  # still one length: missing values are fine
    frame.to_csv(tmp_path / "wide.csv", index=False)
    assert main(args + ["--group", "--overwrite"]) == 0
