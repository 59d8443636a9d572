"""MSFT multi-scale finetuning: mask, aggregator, causality, scale weights, frozen weights, LoRA, save/load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from moe_ts.msft.network import (CrossScaleAggregator, MSFTConfig, avg_pool_nan, coarse_to_fine, fine_to_coarse, merge_lora,
                         msft_loss, scale_attention_mask, scale_inputs, scale_layout)
from moe_ts.msft.model import MSFTModel
from moe_ts.packing import PackedLayout

CFG = ModelConfig(patch_size=4, max_seq_len=32, d_model=16, num_layers=2, num_heads=2,
                  moe=MoEConfig(num_experts=4, top_k=2, d_ff=16))


def base_model(gate: str = "linear", seed: int = 0) -> MoiraiMoEModel:
    torch.manual_seed(seed)
    cfg = CFG if gate == "linear" else ModelConfig(**{**CFG.__dict__, "moe": MoEConfig(num_experts=4, top_k=2, d_ff=16,
                                                                                        gate="centroid")})
    return MoiraiMoEModel(cfg).eval()


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero LoRA B and aggregator maps, as after training (they start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_b" in name or "aggregators" in name or "scale_logits" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif "adapters" in name or "scale_heads" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)


def test_mask_keeps_tokens_in_their_scale_and_causal():
    sizes = [8, 4, 2, 1]
    scale_t, pos_t = scale_layout(sizes)
    real = torch.ones(2, 15, dtype=torch.bool)
    real[1, 0] = False  # a padding key
    mask = scale_attention_mask(scale_t, pos_t, real)
    tokens = [(s, p) for s, n in enumerate(sizes) for p in range(n)]
    for b in range(2):
        for q, (sq, pq) in enumerate(tokens):
            for k, (sk, pk) in enumerate(tokens):
                allowed = (q == k) or (sq == sk and pk <= pq and bool(real[b, k]))
                assert bool(mask[b, q, k]) == allowed, (b, tokens[q], tokens[k])


def test_aggregator_alignment_on_a_hand_made_example():
    coarse = torch.tensor([[[1.0], [2.0], [3.0]]])  # [B=1, 3, D=1]
    assert coarse_to_fine(coarse, 6).flatten().tolist() == [0, 1, 1, 2, 2, 3]  # t gets coarse ⌊(t+1)/2⌋-1
    assert coarse_to_fine(coarse, 7).flatten().tolist() == [0, 1, 1, 2, 2, 3, 3]
    fine = torch.arange(1.0, 8.0).view(1, 7, 1)
    assert fine_to_coarse(fine, 3).flatten().tolist() == [1.5, 3.5, 5.5]
    agg = CrossScaleAggregator(1, 3)
    with torch.no_grad():
        for i, (u, d) in enumerate(zip(agg.up, agg.down)):
            u.weight.fill_(10.0 * (i + 1))
            d.weight.fill_(100.0 * (i + 1))
    s0, s1, s2 = torch.arange(1.0, 9.0).view(1, 8, 1), torch.tensor([[[1.0], [2.0], [3.0], [4.0]]]), torch.tensor([[[5.0], [6.0]]])
    o0, o1, o2 = agg([s0, s1, s2])
    assert (o0.shape, o1.shape, o2.shape) == ((1, 8, 1), (1, 4, 1), (1, 2, 1))
    assert o0.flatten().tolist() == (s0.flatten() + 10 * torch.tensor([0, 1, 1, 2, 2, 3, 3, 4.0])).tolist()
    # scale 1 gets from scale 0 (pooled pairs 1.5, 3.5, ...) ×100 and from scale 2 (0, 5, 5, 6) ×20
    assert o1.flatten().tolist() == [1 + 150 + 0, 2 + 350 + 100, 3 + 550 + 100, 4 + 750 + 120]
    assert o2.flatten().tolist() == [5 + 200 * 1.5, 6 + 200 * 3.5]


def test_pooling_ignores_missing_values():
    x = torch.tensor([[1.0, float("nan"), 2.0, 4.0, float("nan"), float("nan")]])
    out = avg_pool_nan(x, 2)
    assert out[0, :2].tolist() == [1.0, 3.0] and torch.isnan(out[0, 2])


def test_no_token_sees_the_future_through_attention_or_aggregation():
    """Changing fine patch t changes no state of a token (any scale) whose span ends before t."""
    net = MSFTModel.from_network(base_model(), MSFTConfig(num_scales=2, lora_rank=4))
    randomise(net)
    x = torch.randn(1, 64).cumsum(1)
    t = 9  # fine patch 9 = points 36..39; coarse scale 1 patch 4 (36..43) and scale 2 patch 2 (32..47) hold it
    y = x.clone()
    y[0, 36:40] += 5.0
    sx = scale_inputs(x, net.msft, 4, 0.3, 1e-5, "zero_normalized", stats_all=False)
    sy = scale_inputs(y, net.msft, 4, 0.3, 1e-5, "zero_normalized", stats_all=False)
    with torch.no_grad():
        hx, _ = net([s.normed for s in sx], [s.real for s in sx])
        hy, _ = net([s.normed for s in sy], [s.real for s in sy])
    for i, (a, b) in enumerate(zip(hx, hy)):
        span = 4 * 2 ** i
        ends_before = [j for j in range(a.shape[1]) if (j + 1) * span <= 36]
        touches = [j for j in range(a.shape[1]) if (j + 1) * span > 36]
        torch.testing.assert_close(a[:, ends_before], b[:, ends_before], rtol=0, atol=0)
        assert not torch.allclose(a[:, touches], b[:, touches])  # the change does reach later tokens
    assert t == 36 // 4


def test_zero_lora_and_fresh_modules_give_the_base_model_exactly():
    base = base_model()
    x = torch.randn(3, 32).cumsum(1)
    for k in (0, 2):
        net = MSFTModel.from_network(base, MSFTConfig(num_scales=k, lora_rank=4))
        s = scale_inputs(x, net.msft, 4, 0.3, 1e-5, "zero_normalized")
        layout = PackedLayout.from_sample_id(torch.ones(3, 8, dtype=torch.long))
        with torch.no_grad():
            hidden, _ = net([i.normed for i in s], [i.real for i in s])
            ref, _, _ = base(s[0].normed, layout.position, layout.attention_mask())
        if k == 0:
            assert torch.equal(hidden[0], ref)
        else:  # the longer sequence changes SDPA's summation order only
            torch.testing.assert_close(hidden[0], ref, rtol=1e-6, atol=1e-6)


def test_scale_weights_sum_to_one_and_receive_gradients():
    net = MSFTModel.from_network(base_model(), MSFTConfig(num_scales=2, lora_rank=4))
    out = msft_loss(net, torch.randn(4, 64).cumsum(1))
    w = net.scale_weights()
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    out.loss.backward()
    grad = net.scale_logits.grad
    assert grad is not None and (grad.abs() > 0).all()
    # dL/dw_i = p_i (L_i - Σ p_j L_j): check against the softmax formula
    nll = out.scale_nll.detach()
    torch.testing.assert_close(grad, w.detach() * (nll - (w.detach() * nll).sum()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gate", ["linear", "centroid"])
def test_frozen_weights_stay_bit_identical_after_a_step(gate):
    from finetune.data import Splits
    from finetune.train import FinetuneConfig, finetune, prepare_model

    base = base_model(gate)
    cfg = FinetuneConfig(method="msft", steps=2, batch_size=2, window=64, eval_every=2, num_scales=2, lora_rank=4,
                         lr=1e-2)
    net = prepare_model(base, cfg, "base")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    splits = Splits("toy", [rng.normal(size=300).cumsum().astype(np.float32)], [rng.normal(size=64).astype(np.float32)],
                    (300, 364, 400))
    finetune(net, splits, cfg, log=lambda _: None)
    after = net.state_dict()
    frozen = [k for k in before if any(s in k for s in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "out_proj",
                                                          "experts.", "patch_proj", "norm"))]
    trained = [k for k in before if any(s in k for s in ("lora_b", "moe.gate", "scale_logits", "adapters"))]
    assert frozen and trained
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert set(changed) == set(trained), set(trained) - set(changed)
    assert any("gate.centroids" in k for k in trained) == (gate == "centroid")


def test_save_load_gives_identical_forecasts(tmp_path):
    net = MSFTModel.from_network(base_model("centroid"), MSFTConfig(num_scales=2, lora_rank=4))
    randomise(net)
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(50) / 2.0) * 3]
    a = net.forecast(contexts, 8, num_samples=5, seed=3, context_length=64)
    net.save_pretrained(tmp_path / "ft")
    loaded = MSFTModel.from_pretrained(tmp_path / "ft")
    b = loaded.forecast(contexts, 8, num_samples=5, seed=3, context_length=64)
    assert a.samples.shape == (2, 5, 8) and np.isfinite(a.samples).all()
    np.testing.assert_array_equal(a.samples, b.samples)
    assert loaded.msft == net.msft and loaded.config == net.config


def test_a_forecast_is_the_weighted_sum_of_the_scales_upsampled():
    """With weights one-hot on a scale, the forecast is that scale's alone: piecewise constant over 2^i points."""
    net = MSFTModel.from_network(base_model(), MSFTConfig(num_scales=2, lora_rank=4))
    with torch.no_grad():
        net.scale_logits.copy_(torch.tensor([-1e4, -1e4, 0.0]))
    fc = net.forecast([np.sin(np.arange(64) / 3.0)], 16, num_samples=3, seed=0, context_length=64)
    samples = fc.samples[0]
    assert np.array_equal(samples[:, ::4].repeat(4, axis=1), samples)  # scale 2: one value per 4 points


def test_merged_lora_equals_the_adapter_network():
    net = MSFTModel.from_network(base_model(), MSFTConfig(num_scales=0, lora_rank=4, aggregator=False,
                                                         train_gates=False, train_adapters=False))
    randomise(net)
    with torch.no_grad():
        net.adapters[0].weight.add_(torch.randn(16, 16) * 0.05)
        net.adapters[0].bias.add_(0.1)
    plain = merge_lora(net)
    x = torch.randn(2, 32).cumsum(1)
    s = scale_inputs(x, net.msft, 4, 0.3, 1e-5, "zero_normalized")
    layout = PackedLayout.from_sample_id(torch.ones(2, 8, dtype=torch.long))
    with torch.no_grad():
        hidden, _ = net([s[0].normed], [s[0].real])
        ref, _, _ = plain(s[0].normed, layout.position, layout.attention_mask())
    torch.testing.assert_close(hidden[0], ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hidden[0], base_model()(s[0].normed, layout.position, layout.attention_mask())[0])


def test_bad_input_is_rejected_in_one_line(tmp_path, capsys):
    from cli.main import main as cli_main
    from finetune.data import Splits, check_window

    net = MSFTModel.from_network(base_model(), MSFTConfig(num_scales=2, lora_rank=4))
    with pytest.raises(ValueError, match="too short for 2 extra scales: need at least 16"):
        net.forecast([np.arange(10.0)], 4)
    splits = Splits("toy", [np.zeros(100, np.float32)], [np.zeros(40, np.float32)], (100, 140, 180))
    with pytest.raises(ValueError, match="toy: the validation split has 40 points, shorter than one finetuning window of 64"):
        check_window(splits, 64, "--window")

    torch.manual_seed(0)
    dense = MoiraiMoEModel(ModelConfig(**{**CFG.__dict__, "moe": MoEConfig(num_experts=1, top_k=1)}))
    dense.save_pretrained(tmp_path / "dense")
    cases = [
        (["--method", "prompt"], "--method 'prompt': unknown finetuning method (choose from msft, full, head, lora, time-llm)"),
        (["--method", "msft"], "has no MoE layers (1 expert per layer), so there are no gates to finetune"),
        (["--method", "head", "--out", str(tmp_path / "dense")], "is the --checkpoint folder"),
    ]
    for extra, message in cases:
        code = cli_main(["finetune", "--checkpoint", str(tmp_path / "dense"), "--dataset", "etth1",
                         "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and message in err[0], (extra, err)


DATA = Path(__file__).resolve().parents[3] / "data"
DATA = DATA if (DATA / "ett" / "ETTh1.csv").is_file() else Path("/work/shared/data")


@pytest.fixture(scope="module")
def finetune_checkpoint(tmp_path_factory, make_checkpoint):
    """The tiny model with 16-point patches over 64 positions (1024-point contexts): finetuning windows fit."""
    return make_checkpoint(tmp_path_factory.mktemp("ft") / "base", seed=0, patch_size=16, max_seq_len=64,
                           moe=dict(num_experts=4, top_k=2, d_ff=16))


def test_finetune_cli_on_etth1_lora_merges_into_a_plain_model(finetune_checkpoint, tmp_path):
    from cli.main import main as cli_main

    out = tmp_path / "lora"
    assert cli_main(["finetune", "--checkpoint", str(finetune_checkpoint), "--method", "lora", "--dataset", "etth1",
                     "--data-dir", str(DATA), "--out", str(out), "--steps", "2", "--eval-every", "1",
                     "--batch-size", "2", "--eval-max-windows", "1", "--num-samples", "4"]) == 0
    model = MoiraiMoEModel.from_pretrained(out)  # a plain folder: LoRA merged
    base = MoiraiMoEModel.from_pretrained(finetune_checkpoint)
    assert not torch.equal(model.layers[0].attn.q_proj.weight, base.layers[0].attn.q_proj.weight)
    assert torch.equal(model.layers[0].moe.experts.w_up, base.layers[0].moe.experts.w_up)
    report = json.loads((out / "finetune.json").read_text())
    assert report["borders"] == [8640, 11520, 17420] and report["result"]["steps_run"] == 2
    rows = (out / "eval" / "results.csv").read_text()
    assert "etth1" in rows and "720" in rows


def test_finetune_cli_msft_on_a_users_csv(finetune_checkpoint, tmp_path):
    import pandas as pd

    from cli.main import main as cli_main

    csv = tmp_path / "mine.csv"
    pd.read_csv(DATA / "ett" / "ETTh2.csv").iloc[:2400, [0, 1, 7]].to_csv(csv, index=False)
    out = tmp_path / "msft"
    assert cli_main(["finetune", "--checkpoint", str(finetune_checkpoint), "--method", "msft", "--csv", str(csv),
                     "--out", str(out), "--steps", "2", "--eval-every", "1", "--batch-size", "2", "--window", "128",
                     "--num-scales", "1", "--eval-max-windows", "1", "--num-samples", "4"]) == 0
    model = MSFTModel.from_pretrained(out)
    assert model.msft.num_scales == 1
    from moe_ts.io.loading import load_model  # what `moe-ts eval` / `moe-ts forecast` load a folder with

    assert isinstance(load_model(out), MSFTModel)
    results = (out / "eval" / "results.csv").read_text()
    assert "mine" in results and ",336," in results and ",720," not in results  # 720 does not fit the test split
