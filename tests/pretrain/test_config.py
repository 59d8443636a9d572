"""Run config: YAML loading, error paths, generated DeepSpeed JSON, LR schedule."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from moe_ts.typed_config import ConfigError
from pretrain.config import (PretrainConfig, TrainConfig, deepspeed_config, load_pretrain_config, lr_factor,
                             train_flops_per_token)

REPO = Path(__file__).resolve().parents[2]


def test_tiny_yaml_loads_both_sections():
    run = load_pretrain_config(REPO / "configs" / "tiny.yaml")
    assert isinstance(run, PretrainConfig)
    assert run.model.max_seq_len == 128 and run.model.moe.num_experts == 8
    assert run.train.time_budget_s is not None and run.train.time_budget_s <= 600
    assert run.train.micro_batch_size(1) * run.train.grad_accum == run.train.batch_size


def test_shipped_configs_only_name_sources_a_default_corpus_has():
    """`moe-ts prepare` with its defaults must give every dataset a shipped config's mixture names (else the
    demo's pretrain fails on a corpus the README's prepare command built)."""
    from data_prep.prepare import SYNTHETIC_SOURCES, build_parser

    defaults = build_parser().parse_args(["--out", "x"])
    synthetic = {name for name in SYNTHETIC_SOURCES if getattr(defaults, f"{name}_count") > 0}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        train = load_pretrain_config(path).train
        named = set(train.mixture_share) | set(train.mixture)
        assert named <= synthetic, f"{path.name} names {sorted(named - synthetic)}, which default prepare does not write"
    assert load_pretrain_config(REPO / "configs" / "tiny.yaml").train.mixture_share == {"periodic": 0.15, "tsmixup": 0.15}


@pytest.mark.parametrize("text, path", [
    ("train:\n  stepz: 3\n", "train.stepz"),
    ("model:\n  moe:\n    top_kk: 2\n", "model.moe.top_kk"),
    ("optim:\n  lr: 1\n", "optim"),
])
def test_unknown_key_error_names_file_and_path(tmp_path, text, path):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_pretrain_config(f)
    assert str(f) in str(err.value) and path in str(err.value)


@pytest.mark.parametrize("train, msg", [
    ({"lr": "fast"}, "train.lr"),
    ({"zero_stage": 3}, "train.zero_stage"),
    ({"min_lr": 1.0, "lr": 0.1}, "train.min_lr"),
    ({"mixture": {"m4": -1}}, "train.mixture.m4"),
    ({"mixture_share": {"m4": 1.5}}, "train.mixture_share.m4"),
    ({"mixture_share": {"a": 0.6, "b": 0.5}}, "sum to < 1"),
    ({"mixture_share": {"a": 0.5}, "mixture": {"a": 1}}, "exclude each other"),
    ({"batch_size": 0}, "train.batch_size"),
])
def test_bad_values_are_named(tmp_path, train, msg):
    import yaml

    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({"train": train}))
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
        load_pretrain_config(f)


def test_min_window_longer_than_sequence_is_rejected(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  max_seq_len: 4\ntrain:\n  min_window_patches: 5\n")
    with pytest.raises(ConfigError, match="min_window_patches"):
        load_pretrain_config(f)


def test_deepspeed_config_is_generated_from_train_config():
    train = TrainConfig(batch_size=24, grad_accum=3, lr=3e-4, min_lr=1e-5, weight_decay=0.05, betas=(0.9, 0.95),
                        grad_clip=0.5, zero_stage=2)
    ds = deepspeed_config(train, world_size=2)
    assert ds["train_batch_size"] == 24
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2 == 24
    assert ds["train_micro_batch_size_per_gpu"] == 4
    opt = ds["optimizer"]
    assert opt["type"] == "AdamW" and opt["params"]["torch_adam"] is True and opt["params"]["fused"] is True
    assert opt["params"]["lr"] == 3e-4 and opt["params"]["betas"] == [0.9, 0.95]
    assert opt["params"]["weight_decay"] == 0.05
    assert ds["gradient_clipping"] == 0.5 and ds["zero_optimization"]["stage"] == 2
    assert "torch_autocast" not in ds
    bf16 = deepspeed_config(TrainConfig(dtype="bf16", batch_size=4), 1)
    # our own autocast around the loss (engine.py); DeepSpeed re-enters it, casting no module's parameters
    assert bf16["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    assert "bf16" not in bf16


def test_batch_not_divisible_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"batch_size=10 must be divisible by world_size\(2\) x grad_accum\(3\)"):
        deepspeed_config(TrainConfig(batch_size=10, grad_accum=3), world_size=2)


def test_lr_schedule_warmup_then_cosine_to_min():
    train = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    factors = [lr_factor(s, train) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(factors[:9], factors[1:10]))  # linear warmup rises
    assert all(b <= a for a, b in zip(factors[10:], factors[11:]))  # cosine never rises
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, train) == pytest.approx(0.1) and lr_factor(10**6, train) == pytest.approx(0.1)
    assert lr_factor(0, TrainConfig(steps=5, warmup_steps=0)) == pytest.approx(1.0)


def test_train_flops_per_token():
    # 6 x 100 active parameters + 12 x 2 layers x d_model 8 x 16 positions
    assert train_flops_per_token(100, num_layers=2, d_model=8, seq_len=16) == 600 + 3072


def test_old_run_yaml_moves_runtime_keys_to_parallel(tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text("model:\n  d_model: 32\n  num_heads: 4\n  moe:\n    backend: deepspeed\n    capacity_factor: 2.0\n")
    with pytest.warns(FutureWarning, match="runtime choices"):
        run = load_pretrain_config(f)
    assert (run.parallel.moe_dispatcher, run.parallel.capacity_factor) == ("deepspeed", 2.0)
    f.write_text("model:\n  moe:\n    backend: triton\nparallel:\n  moe_dispatcher: torch\n")
    with pytest.warns(FutureWarning):
        assert load_pretrain_config(f).parallel.moe_dispatcher == "torch"  # the new section wins
    f.write_text("parallel:\n  capacity_factor: 0\n")
    with pytest.raises(ConfigError, match="capacity_factor must be > 0"):
        load_pretrain_config(f)


def test_the_old_name_of_the_moe_dispatcher_key_loads_with_a_warning(tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text("parallel:\n  moe_backend: triton\n")
    with pytest.warns(FutureWarning, match="parallel.moe_backend is now parallel.moe_dispatcher"):
        assert load_pretrain_config(f).parallel.moe_dispatcher == "triton"
    f.write_text("parallel:\n  moe_backend: triton\n  moe_dispatcher: torch\n")
    with pytest.raises(ConfigError, match="old.yaml: parallel.moe_backend and parallel.moe_dispatcher are one setting"):
        load_pretrain_config(f)


@pytest.mark.parametrize("backend", ["torch", "triton", "deepspeed"])
def test_parallel_section_installs_the_dispatcher_on_every_layer(backend):
    from moe_ts.config import ModelConfig, MoEConfig
    from pretrain.config import ParallelConfig
    from pretrain.engine import apply_runtime, build_model

    run = PretrainConfig(model=ModelConfig(patch_size=4, max_seq_len=8, d_model=16, num_layers=2, num_heads=2,
                                      moe=MoEConfig(num_experts=3, top_k=1, d_ff=8)),
                    train=TrainConfig(min_window_patches=2),
                    parallel=ParallelConfig(moe_dispatcher=backend, capacity_factor=3.0))
    model = apply_runtime(build_model(run), run)
    names = [layer.moe.dispatcher.name for layer in model.layers]
    assert names == [backend, backend]
    if backend == "deepspeed":
        assert model.layers[0].moe.dispatcher.gate.capacity_factor == 3.0
    assert "backend" not in str(model.config)  # runtime choices stay out of the model's config
