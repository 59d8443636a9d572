"""`moe-ts finetune --method time-llm` over a tiny random Qwen2 (tests/moe_ts/timellm/tiny_llm.py): the loop trains
only the Time-LLM parts, the folder it writes loads and evaluates, and its flags fail in one line when misused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from finetune.data import Splits
from finetune.train import FinetuneConfig, finetune, prepare_time_llm
from tests.moe_ts.timellm import tiny_llm



@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return tiny_llm.build_tiny_llm(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    """1400 hourly points of two noisy daily sines: splits 980 / 140 / 280 by the 0.7 / 0.1 / 0.2 rule."""
    rng = np.random.default_rng(0)
    t = np.arange(1400)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=len(t), freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                          "a": np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=len(t)),
                          "b": 5 + 2 * np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=len(t))})
    path = tmp_path_factory.mktemp("csv") / "toy.csv"
    frame.to_csv(path, index=False)
    return path


def _cfg(llm_dir: Path, **kw) -> FinetuneConfig:
    base = dict(method="time-llm", llm=str(llm_dir), steps=3, batch_size=4, lr=1e-2, eval_every=1, patience=10,
                context_length=32, horizons=(8, 16), d_model=8, d_ff=16, num_prototypes=10)
    return FinetuneConfig(**{**base, **kw})


def test_the_loop_trains_only_the_time_llm_parts(llm_dir):
    rng = np.random.default_rng(1)
    series = [np.sin(np.arange(300) / 4 + p).astype(np.float32) + 0.05 * rng.normal(size=300).astype(np.float32)
              for p in (0.0, 1.0)]
    splits = Splits("toy", [s[:200] for s in series], [s[200:] for s in series], (200, 300, 300))
    torch.manual_seed(0)
    model = prepare_time_llm(_cfg(llm_dir, soft_prompt=4), "toy")
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    trained_before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, splits, _cfg(llm_dir, soft_prompt=4), log=lambda _: None)
    assert all(torch.equal(llm_before[k], v) for k, v in model.llm.state_dict().items())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(trained_before[k], v)}
    assert "soft_prompt" in changed and "prototypes.map.weight" in changed and "heads.16.weight" in changed
    assert result.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert result.total_params == result.trainable_params + sum(p.numel() for p in model.llm.parameters())


def test_cli_writes_a_folder_that_eval_and_load_model_read(llm_dir, csv_file, tmp_path, capsys):
    from finetune.run import main
    from moe_ts.io.loading import load_model

    out = tmp_path / "tl"
    code = main(["--method", "time-llm", "--llm", str(llm_dir), "--csv", str(csv_file), "--out", str(out),
                 "--steps", "2", "--batch-size", "4", "--eval-every", "1", "--context-length", "32",
                 "--horizons", "96", "--d-model", "8", "--d-ff", "16", "--prototypes", "10", "--soft-prompt", "3",
                 "--llm-layers", "2", "--eval-max-windows", "2", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "finetune.json").read_text())
    trainable, total = report["result"]["trainable_params"], report["result"]["total_params"]
    assert 0 < trainable < total and f"{trainable:,} of {total:,} parameters trained" in printed
    assert report["llm"]["name"] == str(llm_dir.resolve()) and report["llm"]["layers"] == 2
    assert report["llm"]["revision"] is None and report["config"]["soft_prompt"] == 3
    assert (out / "eval" / "results.csv").is_file()
    model = load_model(out)
    assert len(model.llm.layers) == 2 and model.config.horizons == (96,)
    assert model.forecast([np.ones(40)], 96).mean.shape == (1, 96)


@pytest.mark.parametrize("argv, message", [
    (["--method", "time-llm", "--llm", "X", "--checkpoint", "ckpt"], "--checkpoint does not apply to --method time-llm"),
    (["--method", "time-llm"], "--llm is required by --method time-llm"),
    (["--method", "msft", "--llm", "X", "--checkpoint", "ckpt"], "--llm is required by --method time-llm and applies "
                                                                 "to it only"),
    (["--method", "time-llm", "--llm", "X", "--horizons", "96,x"], "--horizons '96,x': expected comma-separated"),
    (["--method", "msft", "--checkpoint", "ckpt", "--soft-prompt", "8"],
     "--soft-prompt applies to --method time-llm only, not msft"),
    (["--method", "lora", "--checkpoint", "ckpt", "--prototypes", "50"],
     "--prototypes applies to --method time-llm only, not lora"),
    (["--method", "time-llm", "--llm", "no/such-llm", "--horizons", "48"],
     "--horizons 48: the test-split evaluation of "),  # a CSV's evaluation starts at 96: before any training
])
def test_misused_flags_are_one_line(tmp_path, csv_file, argv, message):
    from finetune.run import main

    with pytest.raises(ValueError) as err:
        main([*argv, "--csv", str(csv_file), "--out", str(tmp_path / "o")])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_not_an_lm_folder_is_one_line_before_training(tmp_path, csv_file):
    from finetune.run import main
    from moe_ts.timellm.llm import LLMError

    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(LLMError, match=r"^--llm .*vit: model_type 'vit' is not a causal or base decoder"):
        main(["--method", "time-llm", "--llm", str(folder), "--csv", str(csv_file), "--out", str(tmp_path / "o")])


def test_heads_shorter_than_the_lsf_evaluation_are_one_line_before_loading(tmp_path):
    from finetune.run import main

    with pytest.raises(ValueError, match=r"^--horizons 96,192: the test-split evaluation of etth1 forecasts 96, 192, "
                                         r"336, 720 points; train a head that long or pass --no-eval$"):
        main(["--method", "time-llm", "--llm", "no/such-llm", "--dataset", "etth1", "--horizons", "96,192",
              "--out", str(tmp_path / "o")])


def test_an_interrupted_time_llm_run_resumes_to_the_same_weights(llm_dir, tmp_path):
    """The kept state (moe_ts/io/kept_state.py) holds only the trainable weights; a resumed run ends where an
    uninterrupted one does."""
    from moe_ts.io.kept_state import KeptState

    rng = np.random.default_rng(2)
    series = [np.sin(np.arange(300) / 4 + p).astype(np.float32) + 0.05 * rng.normal(size=300).astype(np.float32)
              for p in (0.0, 1.0)]
    splits = Splits("toy", [s[:200] for s in series], [s[200:] for s in series], (200, 300, 300))
    cfg = _cfg(llm_dir, soft_prompt=2, steps=4)

    def run(progress, log=lambda _: None):
        torch.manual_seed(0)
        model = prepare_time_llm(cfg, "toy")
        finetune(model, splits, cfg, log=log, progress=progress)
        return model.state_dict()

    reference = run(None)

    def stop_at_step_3(line: str) -> None:
        if line.startswith("step 3:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(KeptState(tmp_path / "out", "finetune", {"k": 1}, resume=False), stop_at_step_3)
    kept = KeptState(tmp_path / "out", "finetune", {"k": 1}, resume=True)
    assert kept.state is not None and kept.state["step"] == 2
    assert not any(k.startswith("llm.") for k in kept.state["model"])
    resumed = run(kept)
    assert set(resumed) == set(reference) and all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_the_loop_trains_through_missing_values(llm_dir):
    """A CSV's gaps stay NaN in the splits (finetune/data.py): missing targets score nothing, so the loss stays
    finite and the validation loss falls as it does without gaps."""
    rng = np.random.default_rng(3)
    series = [np.sin(np.arange(300) / 4 + p).astype(np.float32) + 0.05 * rng.normal(size=300).astype(np.float32)
              for p in (0.0, 1.0)]
    for s in series:
        s[rng.choice(300, 30, replace=False)] = np.nan
    splits = Splits("toy", [s[:200] for s in series], [s[200:] for s in series], (200, 300, 300))
    cfg = _cfg(llm_dir, steps=6)
    torch.manual_seed(0)
    result = finetune(prepare_time_llm(cfg, "toy"), splits, cfg, log=lambda _: None)
    assert all(np.isfinite(h["val"]) for h in result.history) and result.best_val < result.zero_shot_val


def test_a_bfloat16_llm_trains_float32_parts_and_stays_frozen(llm_dir):
    """The CUDA path's mixed precision, run on the CPU: the LLM in bfloat16 (`finetune` picks it for a CUDA
    device), the trainable parts float32, the LLM's weights unchanged by the loop, the validation loss falling."""
    from moe_ts.timellm.llm import default_llm_dtype

    assert default_llm_dtype(torch.device("cpu")) == torch.float32
    rng = np.random.default_rng(4)
    series = [np.sin(np.arange(300) / 4 + p).astype(np.float32) + 0.05 * rng.normal(size=300).astype(np.float32)
              for p in (0.0, 1.0)]
    splits = Splits("toy", [s[:200] for s in series], [s[200:] for s in series], (200, 300, 300))
    cfg = _cfg(llm_dir, soft_prompt=2, steps=4)
    torch.manual_seed(0)
    model = prepare_time_llm(cfg, "toy", torch.bfloat16)
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    assert all(v.dtype == torch.bfloat16 for v in llm_before.values() if v.is_floating_point())
    result = finetune(model, splits, cfg, log=lambda _: None)
    assert all(torch.equal(llm_before[k], v) for k, v in model.llm.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert np.isfinite(result.best_val) and result.best_val < result.zero_shot_val
