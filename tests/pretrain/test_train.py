"""End-to-end pretraining with the real model and DeepSpeed on CPU: outputs, resume exactness, crash leftovers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pretrain.checkpoint import DS_TAG
from pretrain.metrics import read_metrics
from pretrain.train import main

MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 32, "num_layers": 1, "num_heads": 2, "stats_ratio": 0.3,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
TRAIN = {"steps": 8, "batch_size": 4, "grad_accum": 2, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "log_every": 1, "checkpoint_every": 3, "keep_checkpoints": 2, "seed": 0, "wandb_mode": "disabled",
         "peak_tflops": 1.0}
COMPARED = ("loss", "nll", "aux", "z", "lr", "grad_norm")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_corpus):
    import shutil

    root = tmp_path_factory.mktemp("pretrain")
    shutil.copytree(small_corpus, root / "corpus")  # 12 sines + 6 walks with gaps, manifest as `moe-ts prepare` ends
    (root / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN}))
    return root


def run_main(workdir, out, *extra):
    return main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def full_run(workdir):
    """The uninterrupted reference run."""
    out = workdir / "full"
    assert run_main(workdir, out) == 0
    return out


def assert_same_curve(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in COMPARED:
            assert rb[key] == pytest.approx(ra[key], abs=1e-6, rel=1e-6), (ra["step"], key)


def module_weights(ckpt_dir):
    state = torch.load(ckpt_dir / DS_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return state["module"]


def test_run_outputs(full_run):
    from moe_ts.model import MoiraiMoEModel

    records = read_metrics(full_run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    for r in records:
        assert all(np.isfinite(r[k]) for k in COMPARED + ("tokens_per_s",))
        assert len(r["expert_load"]) == 1 and len(r["expert_load"][0]) == 4
        assert sum(r["expert_load"][0]) == pytest.approx(1.0, abs=1e-4)
        assert 0.0 < r["mfu"] < 1.0
    assert records[0]["lr"] == pytest.approx(1.5e-3) and records[1]["lr"] == pytest.approx(3e-3)
    assert records[-1]["lr"] < records[2]["lr"]
    # checkpoints at 3, 6, 8; keep 2; `latest` names the newest
    ckpts = sorted(p.name for p in (full_run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step-6", "step-8"]
    assert (full_run / "checkpoints" / "latest").read_text() == "step-8"
    # the HF folder holds the trained weights (those of the last checkpoint)
    model = MoiraiMoEModel.from_pretrained(str(full_run / "final"))
    saved = module_weights(full_run / "checkpoints" / "step-8")
    loaded = model.state_dict()
    assert set(saved) <= set(loaded)
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    fresh = MoiraiMoEModel(model.config).state_dict()
    assert any(not torch.equal(fresh[k], loaded[k]) for k in saved)  # training changed the weights


def test_stop_and_resume_gives_the_same_loss_curve(workdir, full_run, capsys):
    out = workdir / "chunked"
    assert run_main(workdir, out, "--stop-at", "4") == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert (out / "checkpoints" / "latest").read_text() == "step-4"
    assert run_main(workdir, out, "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    assert_same_curve(read_metrics(full_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl"))
    a, b = module_weights(full_run / "checkpoints" / "step-8"), module_weights(out / "checkpoints" / "step-8")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7)


def test_crash_during_checkpoint_resumes_from_the_previous_one(workdir, full_run, capsys):
    out = workdir / "crashed"
    assert run_main(workdir, out, "--stop-at", "5") == 0
    root = out / "checkpoints"
    # Reproduce a crash while step 5 was being saved: its directory was never renamed, `latest` still old,
    # and metrics.jsonl already holds steps 4 and 5, past the checkpoint that survives.
    (root / "step-5").rename(root / "tmp-step-5")
    (root / "latest").write_text("step-3")
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    capsys.readouterr()
    assert run_main(workdir, out, "--resume") == 0
    log = capsys.readouterr().out
    assert "removed incomplete checkpoint leftover" in log and "step-3 at step 3" in log
    assert not (root / "tmp-step-5").exists()
    assert_same_curve(read_metrics(full_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl"))


def test_fresh_run_into_used_dir_is_refused(workdir, full_run, capsys):
    with pytest.raises(SystemExit) as err:
        run_main(workdir, full_run)
    assert err.value.code == 2
    assert "--resume" in capsys.readouterr().err


def test_cli_errors_are_one_clear_line(workdir, tmp_path, capsys):
    import datasets

    with pytest.raises(SystemExit):
        main(["--config", str(workdir / "run.yaml"), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert "missing: corpus directory not found" in capsys.readouterr().err

    empty = tmp_path / "empty"
    datasets.Dataset.from_dict({"item_id": [], "dataset": [], "target": []}, features=datasets.Features(
        item_id=datasets.Value("string"), dataset=datasets.Value("string"),
        target=datasets.Sequence(datasets.Value("float32")))).save_to_disk(str(empty))
    with pytest.raises(SystemExit):
        main(["--config", str(workdir / "run.yaml"), "--data", str(empty), "--out", str(tmp_path / "o")])
    assert "corpus is empty" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": MODEL, "train": {**TRAIN, "warmup_stpes": 3}}))
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--data", str(workdir / "corpus"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "train.warmup_stpes" in err and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_time_budget_stops_at_a_step_boundary_and_saves(workdir, tmp_path):
    out = tmp_path / "budget"
    assert run_main(workdir, out, "--time-budget", "0.001", "--steps", "50", "--threads", "2") == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1]  # the budget was spent before the first step ended
    assert (out / "checkpoints" / "latest").read_text() == "step-1"
    assert (out / "final" / "model.safetensors").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["steps"] == 50 and saved["train"]["time_budget_s"] == 0.001
    assert saved["train"]["num_threads"] == 2
    assert json.loads(json.dumps(saved))  # plain data


def test_threads_override_is_validated():
    from moe_ts.typed_config import ConfigError
    from pretrain.config import load_pretrain_config
    from pretrain.train import apply_overrides, parse_args

    run = load_pretrain_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    args = parse_args(["--config", "c", "--data", "d", "--out", "o", "--threads", "2"])
    assert apply_overrides(run, args).train.num_threads == 2
    with pytest.raises(ConfigError, match="num_threads must be >= 1"):
        apply_overrides(run, parse_args(["--config", "c", "--data", "d", "--out", "o", "--threads", "0"]))


@pytest.mark.dist
def test_two_process_torchrun(workdir, tmp_path, free_port):
    """Data parallel over 2 gloo ranks: each rank saves its own sampler/RNG state; rank 0 writes the rest."""
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    out = tmp_path / "dp2"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "pretrain.train", "--config", str(workdir / "run.yaml"),
           "--data", str(workdir / "corpus"), "--out", str(out), "--steps", "3"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        stdout, stderr = proc.communicate()
        pytest.fail(f"2-process run timed out: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert "world size 2" in stdout
    ckpt = out / "checkpoints" / "step-3"
    assert (ckpt / "trainer_rank0.json").is_file() and (ckpt / "trainer_rank1.json").is_file()
    s0 = json.loads((ckpt / "trainer_rank0.json").read_text())["sampler"]
    s1 = json.loads((ckpt / "trainer_rank1.json").read_text())["sampler"]
    assert s0["rows"] == s1["rows"] == 3 * 2 * 1  # steps x grad_accum x micro-batch (4 / (2 ranks x 2))
    assert s0["rng"] != s1["rng"]  # the ranks draw different windows
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "final" / "model.safetensors").is_file()


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_resume_with_a_changed_config_is_refused_before_any_file_changes(workdir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(workdir, out, "--stop-at", "2") == 0
    before = _snapshot(out)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"model": {**MODEL, "d_model": 64}, "train": {**TRAIN, "lr": 1e-3}}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(["--config", str(changed), "--data", str(workdir / "corpus"), "--out", str(out), "--resume"])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and "model.d_model" in msg and "train.lr" in msg and "config.yaml" in msg
    assert _snapshot(out) == before


def test_unfinished_run_says_so_and_trainer_state_is_plain_json(workdir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(workdir, out, "--stop-at", "3") == 0
    assert "UNFINISHED" in capsys.readouterr().out
    info = json.loads((out / "final" / "training.json").read_text())
    assert info["step"] == 3 and info["planned_steps"] == 8 and info["finished"] is False
    assert len(info["corpus_fingerprint"]) == 64 and info["datasets"] == ["sines", "walks"]
    card = (out / "final" / "README.md").read_text()
    assert "NOT finished: stopped at step 3 of 8" in card
    assert "datasets:\n- sines\n- walks" in card.split("---")[1]  # the card's metadata names the training data
    state = json.loads((out / "checkpoints" / "step-3" / "trainer_rank0.json").read_text())
    assert state["step"] == 3 and state["planned_steps"] == 8 and state["finished"] is False
    assert state["corpus_fingerprint"] == info["corpus_fingerprint"]
    assert not list((out / "checkpoints" / "step-3").glob("trainer_rank*.pt"))


def test_corpus_without_a_complete_manifest_is_refused(workdir, tmp_path, capsys):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(workdir / "corpus", corpus)
    (corpus / "manifest.json").unlink()
    with pytest.raises(SystemExit):
        main(["--config", str(workdir / "run.yaml"), "--data", str(corpus), "--out", str(tmp_path / "o")])
    msg = capsys.readouterr().err
    assert "manifest.json" in msg and "moe-ts prepare" in msg and len(msg.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


class _Payload:
    """Unpickling this runs code: it creates the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_does_not_unpickle_code_from_a_received_checkpoint(workdir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(workdir, out, "--stop-at", "2") == 0
    ds = out / "checkpoints" / "step-2" / DS_TAG
    victim = next(ds.rglob("*optim_states.pt"))
    torch.save({"optimizer_state_dict": _Payload(tmp_path / "pwned")}, victim)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_main(workdir, out, "--resume")
    err = capsys.readouterr().err.strip()
    assert not (tmp_path / "pwned").exists()
    assert "refused to unpickle" in err and len(err.splitlines()) == 1


def test_bf16_run_trains_under_autocast_on_the_cpu(workdir, full_run, tmp_path):
    """`train.dtype: bf16` end to end (it failed at its first step before: pretrain/engine.py train_step)."""
    config = tmp_path / "bf16.yaml"
    config.write_text(yaml.safe_dump({"model": MODEL, "train": {**TRAIN, "dtype": "bf16"}}))
    out = tmp_path / "bf16"
    assert main(["--config", str(config), "--data", str(workdir / "corpus"), "--out", str(out),
                 "--stop-at", "3"]) == 0
    bf16 = read_metrics(out / "metrics.jsonl")
    fp32 = read_metrics(full_run / "metrics.jsonl")[:3]
    assert [r["step"] for r in bf16] == [1, 2, 3]
    for a, b in zip(bf16, fp32):  # the same batches: close, but not the fp32 numbers (autocast is on)
        assert a["nll"] != b["nll"] and a["nll"] == pytest.approx(b["nll"], rel=5e-2), (a["step"], a["nll"], b["nll"])


def test_resuming_a_run_saved_before_fused_adamw_says_it_keeps_the_for_loop_optimizer(workdir, tmp_path, capsys):
    out = tmp_path / "old"
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": MODEL, "train": {**TRAIN, "fused_adamw": False}}))
    assert main(["--config", str(old), "--data", str(workdir / "corpus"), "--out", str(out), "--stop-at", "3"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["train"]["fused_adamw"]  # as a run written before the key existed
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert run_main(workdir, out, "--resume") == 0  # the default: fused_adamw true
    said = capsys.readouterr().out
    assert ("the resumed AdamW keeps the checkpoint's for-loop implementation (train.fused_adamw=True applies to "
            "new runs)") in said
