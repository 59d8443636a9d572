"""Checkpoint folders: strict, clear failures for missing, truncated or mismatched files."""
from __future__ import annotations

import json

import pytest
import torch

from moe_ts.io.hub import ModelFolderError
from moe_ts.model import MoiraiMoEModel


@pytest.fixture()
def ckpt(writable_checkpoint):
    return writable_checkpoint  # the tiny model's folder (conftest.py), a private copy at tmp_path / "ck"


def test_missing_weights_file(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="model.safetensors: missing weights file"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_truncated_weights_file(ckpt):
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match="truncated or corrupt safetensors"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_missing_folder_and_config(tmp_path, ckpt):
    with pytest.raises(ModelFolderError, match="checkpoint folder not found"):
        MoiraiMoEModel.from_pretrained(tmp_path / "nope")
    (ckpt / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="config.json: missing"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_config_that_does_not_match_weights(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    config["moe"]["num_experts"] = 4
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"weights do not match config.json: .*shape mismatch"):
        MoiraiMoEModel.from_pretrained(ckpt)
    config["moe"]["num_experts"] = 3
    config["num_layers"] = 2
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"missing \d+ \(e.g. layers.1"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_config_with_unknown_key_or_bad_json(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    config["moe"]["n_exprts"] = 3
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match=r"config.moe.n_exprts"):
        MoiraiMoEModel.from_pretrained(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        MoiraiMoEModel.from_pretrained(ckpt)


def test_weights_written_atomically(ckpt, monkeypatch):
    """A crash while writing leaves the previous weights intact and no temp file behind."""
    before = (ckpt / "model.safetensors").read_bytes()
    model = MoiraiMoEModel.from_pretrained(ckpt)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr("moe_ts.io.hub.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(ckpt)
    assert (ckpt / "model.safetensors").read_bytes() == before
    assert (ckpt / "config.json").is_file()
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    MoiraiMoEModel.from_pretrained(ckpt)
    assert torch.isfinite(next(model.parameters())).all()


def test_export_puts_the_eval_table_in_the_model_card(ckpt, tmp_path, capsys):
    from cli.main import main

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "results.md").write_text("| dataset | MAE rel. |\n|---|---|\n| M4 Hourly | 0.8123 |\n")
    from moe_ts.io.provenance import write_eval_source

    write_eval_source(eval_dir, ckpt)  # what `moe-ts eval` records
    assert main(["export", "--checkpoint", str(ckpt), "--eval", str(eval_dir), "--out", str(tmp_path / "release")]) == 0
    card = (tmp_path / "release" / "README.md").read_text()
    assert "| M4 Hourly | 0.8123 |" in card and "library_name: moe-ts" in card
    assert "experts, top-1" in card
    MoiraiMoEModel.from_pretrained(tmp_path / "release")
    assert main(["export", "--checkpoint", str(ckpt), "--eval", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 1
    assert "no evaluation results" in capsys.readouterr().err



def test_old_config_with_runtime_keys_loads_with_a_deprecation_warning(ckpt):
    """config.json written before backend/capacity_factor left the model config: same weights, keys dropped."""
    path = ckpt / "config.json"
    data = json.loads(path.read_text())
    assert "backend" not in data["moe"] and "capacity_factor" not in data["moe"]  # not written any more
    data["moe"].update(backend="triton", capacity_factor=2.0)
    path.write_text(json.dumps(data))
    with pytest.warns(FutureWarning, match=r"moe\.backend, moe\.capacity_factor"):
        model = MoiraiMoEModel.from_pretrained(ckpt)
    assert model.layers[0].moe.dispatcher.name == "torch"  # a runtime choice: the default, not the stored one
    reference = MoiraiMoEModel.from_pretrained(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
