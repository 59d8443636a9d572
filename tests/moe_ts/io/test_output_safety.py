"""Nothing of the user's is destroyed; half-made artefacts are refused; artefacts say what they are."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli.main import main
from moe_ts.io.hub import ModelFolderError
from moe_ts.model import MoiraiMoEModel

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def ckpt(writable_checkpoint):
    return writable_checkpoint  # the tiny model's folder (conftest.py), a private copy at tmp_path / "ck"


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "data").mkdir()
    (path / "data" / "x.csv").write_text("a,b\n1,2\n")
    return path


def test_a_users_files_survive_export(ckpt, tmp_path, capsys):
    out = user_folder(tmp_path / "release")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not written by moe-ts" in err and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "my notes" and (out / "data" / "x.csv").is_file()
    assert not (out / "model.safetensors").exists()


def test_export_into_our_own_folder_replaces_it_and_overwrite_replaces_a_users(ckpt, tmp_path):
    out = tmp_path / "release"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0  # ours: replaced
    MoiraiMoEModel.from_pretrained(out)
    other = user_folder(tmp_path / "other")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(other), "--overwrite"]) == 0
    assert not (other / "notes.txt").exists() and (other / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or backup left


def test_export_out_naming_a_file_is_an_error_and_the_file_stays(ckpt, tmp_path, capsys):
    target = tmp_path / "release.txt"
    target.write_text("keep me")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(target)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err
    assert target.read_text() == "keep me"


def test_save_pretrained_refuses_a_users_folder(ckpt, tmp_path):
    out = user_folder(tmp_path / "mine")
    model = MoiraiMoEModel.from_pretrained(ckpt)
    with pytest.raises(ValueError, match="not written by moe-ts.*overwrite=True"):
        model.save_pretrained(out)
    assert (out / "notes.txt").read_text() == "my notes"


def test_release_folder_gets_the_users_umask(ckpt, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "release")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "release").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "release" / "model.safetensors").stat().st_mode) == 0o644


def test_nan_weights_are_refused_naming_the_tensor(ckpt):
    weights = ckpt / "model.safetensors"
    state = load_file(weights)
    name = sorted(state)[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, weights)
    (ckpt / "checksums.json").unlink()  # as a folder written before checksums were recorded
    with pytest.raises(ModelFolderError, match=rf"tensor '{name}' holds 1 non-finite value"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_export_refuses_an_evaluation_of_other_weights(ckpt, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    MoiraiMoEModel(MoiraiMoEModel.from_pretrained(ckpt).config).save_pretrained(other)
    eval_dir = tmp_path / "eval"
    tsf = tmp_path / "in.tsf"
    tsf.write_text("@relation t\n@attribute series_name string\n@frequency yearly\n@horizon 2\n@missing false\n"
                   "@equallength true\n@data\n" + "".join(f"S{i}:" + ",".join(str(float((j * (i + 1)) % 7))
                                                          for j in range(24)) + "\n" for i in range(2)))
    assert main(["eval", "--checkpoint", str(other), "--tsf", str(tsf), "--out", str(eval_dir),
                 "--num-samples", "4", "--plot-series", "0"]) == 0
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--eval", str(eval_dir), "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evaluates other weights" in err
    assert not (tmp_path / "r").exists()
    pushed = {}

    class FakeApi:  # stands in for the Hub: records what would be uploaded
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, ignore_patterns=None, **kwargs):
            import fnmatch

            names = [p.name for p in Path(folder_path).iterdir()]
            pushed.update({n: (Path(folder_path) / n).read_bytes() for n in names
                           if not any(fnmatch.fnmatch(n, pat) for pat in ignore_patterns or [])})

    import huggingface_hub.hub_mixin

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    assert main(["export", "--checkpoint", str(other), "--eval", str(eval_dir), "--out", str(tmp_path / "r"),
                 "--push-to-hub", "me/tiny", "--license", "apache-2.0"]) == 0
    assert sorted(pushed) == ["README.md", "checksums.json", "config.json", "model.safetensors"]  # no local marker
    card = (tmp_path / "r" / "README.md").read_text()
    assert pushed["README.md"].decode() == card
    head = card.split("---")[1]
    for key in ("license: apache-2.0", "pipeline_tag: time-series-forecasting", "library_name: moe-ts", "tags:"):
        assert key in head
    assert str(tmp_path) not in card and 'from_pretrained("me/tiny")' in card
    assert "## Limitations" in card and "## Intended use" in card and "## Training" in card


def test_a_killed_prepare_is_refused_by_pretrain_and_cleaned_by_the_next_run(tmp_path, capsys):
    """A real SIGKILL while the corpus is being decontaminated / finished."""
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "data_prep.prepare", "--out", str(out), "--datasets", "hospital",
           "--max-series-per-dataset", "10", "--synthetic-count", "10", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        # Arrow data is written (today's code: into --out itself; now: into a hidden staging folder), the
        # manifest is not yet: kill it there.
        while time.time() < deadline and proc.poll() is None:
            written = [p for p in [out, *tmp_path.glob(".corpus.tmp-*")] if (p / "state.json").is_file()]
            if written and not (out / "manifest.json").exists():
                break
            time.sleep(0.01)
        assert proc.poll() is None, "prepare finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model: {patch_size: 4, max_seq_len: 8, d_model: 16, num_layers: 1, num_heads: 2, "
                        "moe: {num_experts: 2, top_k: 1, d_ff: 16}}\ntrain: {steps: 2, batch_size: 2}\n")
    capsys.readouterr()
    assert main(["pretrain", "--config", str(run_yaml), "--data", str(out), "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "moe-ts prepare" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers  # the killed build left its staging behind ...
    assert main(["prepare", "--out", str(out), "--datasets", "hospital", "--max-series-per-dataset", "5",
                 "--synthetic-count", "5", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0", "--include-eval"]) == 0  # no leak check: fast
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # ... which the next run removed
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_prepare_refuses_a_users_folder(tmp_path, capsys):
    out = user_folder(tmp_path / "corpus")
    assert main(["prepare", "--out", str(out), "--datasets", "hospital", "--max-series-per-dataset", "2",
                 "--synthetic-count", "2", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]) != 0
    assert "not written by moe-ts" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "my notes"


def test_eval_and_pretrain_refuse_a_users_folder(tmp_path, capsys):
    out = user_folder(tmp_path / "results")
    assert main(["eval", "--checkpoint", "naive", "--suite", "monash", "--datasets", "hospital",
                 "--max-series", "2", "--out", str(out)]) != 0
    assert "not written by moe-ts" in capsys.readouterr().err
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model: {patch_size: 4, max_seq_len: 8, d_model: 16, num_layers: 1, num_heads: 2, "
                        "moe: {num_experts: 2, top_k: 1, d_ff: 16}}\ntrain: {steps: 1, batch_size: 2}\n")
    (out / "config.yaml").write_text("mine")
    corpus = tmp_path / "corpus"
    assert main(["prepare", "--out", str(corpus), "--datasets", "hospital", "--max-series-per-dataset", "2",
                 "--synthetic-count", "2", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0", "--include-eval"]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config", str(run_yaml), "--data", str(corpus), "--out", str(out)]) != 0
    assert "not written by moe-ts" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == "mine" and (out / "notes.txt").is_file()
