"""Damaged or mistaken checkpoints (issue 25): checksums, non-finite weights, a local path never tried on the
Hub, a folder of another model type named as such, an unfinished corpus refused."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from cli.main import main
from moe_ts.io.hub import ModelFolderError
from moe_ts.model import MoiraiMoEModel

LEGACY = Path(__file__).resolve().parents[2] / "data" / "legacy" / "folders"
UNI2TS = Path(__file__).resolve().parents[2] / "data" / "uni2ts_moe_tiny"


def test_the_weights_checksum_is_recorded_at_save(writable_checkpoint):
    import hashlib

    record = json.loads((writable_checkpoint / "checksums.json").read_text())
    digest = hashlib.sha256((writable_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert record["sha256"]["model.safetensors"] == digest


def test_a_flipped_byte_in_the_weights_is_one_line_naming_the_file(writable_checkpoint, capsys):
    weights = writable_checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's values: the file still parses, the value is still finite
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=rf"{weights}: damaged: its SHA-256 .* differs from the one recorded"):
        MoiraiMoEModel.from_pretrained(writable_checkpoint)
    assert main(["export", "--checkpoint", str(writable_checkpoint), "--out",
                 str(writable_checkpoint.parent / "r")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(weights) in err[0] and "damaged" in err[0]


def test_a_folder_without_a_recorded_checksum_still_loads(writable_checkpoint):
    (writable_checkpoint / "checksums.json").unlink(missing_ok=True)
    MoiraiMoEModel.from_pretrained(writable_checkpoint)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_weights_are_refused_like_nan(writable_checkpoint, value):
    weights = writable_checkpoint / "model.safetensors"
    state = load_file(weights)
    name = sorted(state)[-1]
    state[name] = state[name].clone()
    state[name].view(-1)[1] = value
    save_file(state, weights)
    (writable_checkpoint / "checksums.json").unlink(missing_ok=True)  # as an older folder: the value check must catch it
    with pytest.raises(ModelFolderError, match=rf"tensor '{name}' holds 1 non-finite value"):
        MoiraiMoEModel.from_pretrained(writable_checkpoint)


@pytest.mark.parametrize("name", ["./runs/fnal", "runs/demo/fnal", "~/no-such-moe-ts-folder", "no-such-run/",
                                  "{tmp}/typo/final", "{tmp}/typo", "mymodel"])
def test_a_missing_local_path_is_one_line_at_once_never_a_hub_download(name, tmp_path, monkeypatch):
    import huggingface_hub.hub_mixin
    import moe_ts.io.hub

    def no_hub(*args, **kwargs):
        raise AssertionError("tried the Hub")

    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", no_hub)
    monkeypatch.setattr(moe_ts.io.hub, "hf_hub_download", no_hub)
    name = name.format(tmp=tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(ModelFolderError, match="checkpoint folder not found"):
        MoiraiMoEModel.from_pretrained(name)
    assert time.perf_counter() - t0 < 1.0
    from moe_ts.io.loading import load_model

    with pytest.raises(ModelFolderError, match="checkpoint folder not found"):
        load_model(name)


def test_a_typo_inside_an_existing_folder_is_local_and_a_hub_id_is_tried_once(tmp_path, monkeypatch):
    from moe_ts.io.hub import looks_like_hub_id

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not looks_like_hub_id("runs/fnal")  # "runs" is a local folder: a mistyped path, not a repo
    assert looks_like_hub_id("Salesforce/moirai-moe-1.0-R-small")
    import huggingface_hub.hub_mixin

    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs.get("repo_id"))
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", offline)
    with pytest.raises(ModelFolderError, match="me/model: no such local folder, and as a Hub repo id it failed"):
        MoiraiMoEModel.from_pretrained("me/model")
    assert calls == ["me/model"]


@pytest.mark.parametrize("kind, says", [("student", "is a distilled MLP student folder"),
                                        ("msft", "is an MSFT-finetuned model folder")])
def test_a_folder_of_another_model_type_is_named(kind, says, tmp_path, capsys):
    with pytest.raises(ModelFolderError, match=says):
        MoiraiMoEModel.from_pretrained(LEGACY / kind)
    for cmd in (["finetune", "--checkpoint", str(LEGACY / kind), "--method", "head", "--dataset", "etth1"],
                ["centroids", "--checkpoint", str(LEGACY / kind), "--data", str(tmp_path / "c")]):
        assert main([*cmd, "--out", str(tmp_path / "o")]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


def test_an_unconverted_uni2ts_folder_says_convert_it_first():
    with pytest.raises(ModelFolderError, match="unconverted uni2ts checkpoint folder; convert it first"):
        MoiraiMoEModel.from_pretrained(UNI2TS)


def test_a_corpus_manifest_without_complete_true_is_refused(tmp_path, write_arrow_corpus, capsys):
    import numpy as np

    corpus = write_arrow_corpus(tmp_path / "corpus", [{"item_id": "a", "dataset": "d",
                                                       "target": np.arange(64, dtype=np.float32)}])
    run = tmp_path / "run.yaml"
    run.write_text("model: {patch_size: 4, max_seq_len: 8, d_model: 16, num_layers: 1, num_heads: 2, "
                   "moe: {num_experts: 2, top_k: 1, d_ff: 16}}\ntrain: {steps: 1, batch_size: 2}\n")
    capsys.readouterr()
    for manifest in ({"rows": 1}, {"complete": False}, {"complete": "yes"}):
        (corpus / "manifest.json").write_text(json.dumps(manifest))
        assert main(["pretrain", "--config", str(run), "--data", str(corpus), "--out", str(tmp_path / "r")]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "moe-ts prepare" in err[0], (manifest, err)
        assert not (tmp_path / "r" / "checkpoints").exists()
