"""`moe-ts centroids`: planted clusters recovered, weights transferred as documented, the folder pretrains on."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from cli.main import main as cli_main
from moe_ts.centroids import kmeans, transfer_to_centroid_model
from moe_ts.config import ModelConfig
from moe_ts.model import MoiraiMoEModel
from pretrain.centroids import centroid_config

TINY = dict(patch_size=4, max_seq_len=8, d_model=16, num_layers=2, num_heads=2)


def test_minibatch_kmeans_recovers_planted_centroids_of_unequal_clusters():
    gen = torch.Generator().manual_seed(3)
    planted = torch.randn(8, 32, generator=gen) * 5
    sizes = torch.tensor([400, 50, 300, 120, 80, 500, 60, 200])
    labels = torch.repeat_interleave(torch.arange(8), sizes)
    x = planted[labels] + torch.randn(len(labels), 32, generator=gen) * 0.3
    found = kmeans(x, 8, iters=60, batch_size=256, seed=0)
    nearest = torch.cdist(planted, found).argmin(1)
    assert sorted(nearest.tolist()) == list(range(8))  # one found centroid per planted one
    # each found centroid sits at its cluster's mean (noise mean ~ 0.3/sqrt(n) per coordinate)
    assert (found[nearest] - planted).norm(dim=1).max() < 0.5


def _states(cfg: ModelConfig, model: MoiraiMoEModel, n: int = 6) -> list[torch.Tensor]:
    from moe_ts.centroids import collect_ffn_inputs

    target = torch.randn(n, cfg.max_seq_len * cfg.patch_size).cumsum(1)
    batch = {"target": target, "sample_id": torch.ones(n, cfg.max_seq_len, dtype=torch.long)}
    return collect_ffn_inputs(model, [batch], max_tokens=10_000)


def test_dense_source_upcycled_computes_the_same_function(tiny_model):
    """A dense FFN copied into every expert: any top-k mixture (weights sum to 1) equals the FFN."""
    dense = tiny_model(seed=0, **TINY, moe=dict(num_experts=1, top_k=1, d_ff=8)).eval()
    dense_cfg = dense.config
    cfg = centroid_config(dense_cfg, 4, None, "nearest", "src")
    assert (cfg.moe.num_experts, cfg.moe.top_k, cfg.moe.gate) == (4, 2, "centroid")
    states = _states(dense_cfg, dense)
    centroids = [kmeans(s, 4, iters=5) for s in states]
    target = MoiraiMoEModel(cfg).eval()
    mapping = transfer_to_centroid_model(dense, target, centroids)
    assert mapping == [[0, 0, 0, 0]] * 2
    patches = torch.randn(3, 8, 4)
    pos = torch.arange(8).expand(3, 8)
    mask = torch.ones(8, 8, dtype=torch.bool).tril().expand(3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(target(patches, pos, mask)[0], dense(patches, pos, mask)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target.layers[1].moe.gate.centroids, centroids[1])


def test_moe_source_experts_follow_the_tokens_their_gate_sent(tiny_model):
    """Source gate sends cluster k to expert sigma(k); the target routes cluster k to expert k, which must
    therefore hold source expert sigma(k)."""
    source = tiny_model(seed=0, **{**TINY, "num_layers": 1}, moe=dict(num_experts=4, top_k=2, d_ff=8))
    src_cfg = source.config
    sigma = [2, 0, 3, 1]
    centers = torch.eye(4, 16) * 10
    with torch.no_grad():  # gate row sigma(k) points at center k
        source.layers[0].moe.gate.proj.weight.copy_(centers[torch.tensor(sigma).argsort()])
    labels = torch.arange(4).repeat(25)
    states = [centers[labels] + torch.randn(100, 16) * 0.1]
    target = MoiraiMoEModel(centroid_config(src_cfg, None, None, "nearest", "src"))
    mapping = transfer_to_centroid_model(source, target, [centers], states)
    assert mapping == [sigma]
    for k in range(4):
        assert torch.equal(target.layers[0].moe.experts.w_down[k], source.layers[0].moe.experts.w_down[sigma[k]])
    src_state, tgt_state = source.state_dict(), target.state_dict()
    outside = [k for k in src_state if ".moe." not in k]
    assert len(outside) > 10 and all(torch.equal(src_state[k], tgt_state[k]) for k in outside)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, write_arrow_corpus, make_checkpoint):
    root = tmp_path_factory.mktemp("centroids")
    rng = np.random.default_rng(0)
    write_arrow_corpus(root / "corpus", [
        {"item_id": f"s-{i}", "dataset": "sines",
         "target": (np.sin(np.arange(200) / rng.uniform(2, 8)) * rng.uniform(1, 5)).astype(np.float32)}
        for i in range(10)])
    make_checkpoint(root / "moe", seed=0, **TINY, moe=dict(num_experts=4, top_k=2, d_ff=8))
    make_checkpoint(root / "dense", seed=None, **TINY, moe=dict(num_experts=1, top_k=1, d_ff=8))  # RNG continues
    return root


def test_command_writes_a_folder_that_forecasts_and_pretrains_on(corpus, tmp_path):
    out = tmp_path / "centroid"
    assert cli_main(["centroids", "--checkpoint", str(corpus / "moe"), "--data", str(corpus / "corpus"),
                     "--out", str(out), "--num-windows", "40", "--iters", "10"]) == 0
    model = MoiraiMoEModel.from_pretrained(out)
    assert model.config.moe.gate == "centroid" and model.config.moe.centroid_select == "nearest"
    report = json.loads((out / "centroids.json").read_text())
    assert sum(report["layers"][0]["cluster_sizes"]) == report["layers"][0]["tokens"] > 0
    fc = model.forecast([np.sin(np.arange(40) / 3.0)], 8, num_samples=4)
    assert fc.mean.shape == (1, 8) and np.isfinite(fc.mean).all()

    run = tmp_path / "run.yaml"  # its model: section differs on purpose; --init's config.json wins
    run.write_text(yaml.safe_dump({"model": {**TINY, "moe": {"num_experts": 2, "d_ff": 4}},
                                   "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "log_every": 1,
                                             "wandb_mode": "disabled"}}))
    assert cli_main(["pretrain", "--config", str(run), "--data", str(corpus / "corpus"), "--out",
                     str(tmp_path / "run"), "--init", str(out)]) == 0
    final = MoiraiMoEModel.from_pretrained(tmp_path / "run" / "final")
    assert final.config == model.config
    # centroids are fixed buffers in pretraining: the run must have started from the written ones
    torch.testing.assert_close(final.layers[1].moe.gate.centroids, model.layers[1].moe.gate.centroids, rtol=0, atol=0)
    assert json.loads((tmp_path / "run" / "final" / "training.json").read_text())["init"] == str(out)


@pytest.mark.parametrize("extra, message", [
    ([], "has no MoE layers (1 expert per layer); pass --num-experts"),
    (["--num-experts", "0"], "moe.num_experts must be >= 1"),
])
def test_dense_source_errors_are_one_line(corpus, tmp_path, capsys, extra, message):
    code = cli_main(["centroids", "--checkpoint", str(corpus / "dense"), "--data", str(corpus / "corpus"),
                     "--out", str(tmp_path / "o"), "--num-windows", "4", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and message in err[0], err


def test_bad_inputs_are_one_line(corpus, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(corpus / "moe"), "--num-experts", "8"], "has 4 experts per layer; --num-experts must be 4"),
        (["--checkpoint", str(corpus / "corpus")], "config.json: missing"),
        (["--checkpoint", str(corpus / "moe"), "--num-windows", "0"], "--num-windows must be >= 1"),
        (["--checkpoint", str(tmp_path / "o")], "is the --checkpoint folder; the pretrained model would be replaced"),
    ]
    for args, message in cases:
        code = cli_main(["centroids", "--data", str(corpus / "corpus"), "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "o").exists()


def test_dense_upcycling_through_the_command(corpus, tmp_path):
    out = tmp_path / "up"
    assert cli_main(["centroids", "--checkpoint", str(corpus / "dense"), "--data", str(corpus / "corpus"),
                     "--out", str(out), "--num-windows", "8", "--num-experts", "4", "--select", "farthest",
                     "--iters", "5"]) == 0
    model = MoiraiMoEModel.from_pretrained(out)
    assert (model.config.moe.num_experts, model.config.moe.top_k, model.config.moe.centroid_select) == (4, 2, "farthest")
    w = model.layers[0].moe.experts.w_up
    assert all(torch.equal(w[0], w[e]) for e in range(4))
    assert dataclasses.replace(model.config.moe, num_experts=1, top_k=1, gate="linear",
                               centroid_select="nearest") == MoiraiMoEModel.from_pretrained(corpus / "dense").config.moe
