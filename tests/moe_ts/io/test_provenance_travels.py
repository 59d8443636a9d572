"""Provenance travels (issue 25): converted weights keep their source's credit, licence and conversion record
through export, finetune, distill, centroids and `pretrain --init`; every card is ours (never the
huggingface_hub stub) and says what the folder is and which decoding produced its numbers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli.main import main

TESTS = Path(__file__).resolve().parents[2]
UNI2TS = TESTS / "data" / "uni2ts_moe_tiny"
LEGACY_MSFT = TESTS / "data" / "legacy" / "folders" / "msft"
TINY = dict(patch_size=4, max_seq_len=8, d_model=16, num_layers=2, num_heads=2)
LICENSE = "cc-by-nc-4.0"
TSF = ("@relation t\n@attribute series_name string\n@frequency yearly\n@horizon 2\n@missing false\n"
       "@equallength true\n@data\n" + "".join(f"S{i}:" + ",".join(str(float((j * (i + 1)) % 7)) for j in range(40))
                                            + "\n" for i in range(2)))


def card_license(folder: Path) -> str | None:
    head = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    return head.get("license")


def assert_credited(folder: Path, record: dict) -> None:
    """`folder` holds the conversion record and a card crediting the source under its licence."""
    assert json.loads((folder / "conversion.json").read_text()) == record
    card = (folder / "README.md").read_text()
    assert "Salesforce" in card and record["source"] in card and "did not pretrain" in card, card
    assert "trained with\n[moe-ts]" not in card
    assert card_license(folder) == LICENSE


@pytest.fixture(scope="module")
def converted_tiny(tmp_path_factory, make_checkpoint):
    """A tiny MoE folder carrying a conversion record, as `moe-ts convert --license cc-by-nc-4.0` leaves one."""
    root = tmp_path_factory.mktemp("provenance")
    folder = make_checkpoint(root / "converted", seed=0, **TINY, moe=dict(num_experts=4, top_k=2, d_ff=8))
    record = {"from": "uni2ts", "source": "Salesforce/moirai-moe-1.0-R-small", "source_weights_sha256": "0" * 64,
              "license": LICENSE, "compatibility": {}}
    (folder / "conversion.json").write_text(json.dumps(record, indent=1) + "\n")
    return folder, record


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, write_arrow_corpus):
    rng = np.random.default_rng(0)
    return write_arrow_corpus(tmp_path_factory.mktemp("corpus") / "corpus", [
        {"item_id": f"s-{i}", "dataset": "sines",
         "target": (np.sin(np.arange(200) / rng.uniform(2, 8)) * rng.uniform(1, 5)).astype(np.float32)}
        for i in range(10)])


def test_a_real_conversion_keeps_its_credit_and_licence_through_export(tmp_path):
    converted = tmp_path / "converted"
    assert main(["convert", "--from", "uni2ts", str(UNI2TS), "--out", str(converted), "--license", LICENSE]) == 0
    record = json.loads((converted / "conversion.json").read_text())
    assert record["license"] == LICENSE
    release = tmp_path / "release"
    assert main(["export", "--checkpoint", str(converted), "--out", str(release)]) == 0
    assert_credited(release, record)
    assert main(["export", "--checkpoint", str(release), "--out", str(tmp_path / "again")]) == 0  # and on
    assert_credited(tmp_path / "again", record)


def test_centroids_and_pretrain_init_carry_the_credit(converted_tiny, corpus, tmp_path):
    source, record = converted_tiny
    cent = tmp_path / "cent"
    assert main(["centroids", "--checkpoint", str(source), "--data", str(corpus), "--out", str(cent),
                 "--num-windows", "40", "--iters", "5"]) == 0
    assert_credited(cent, record)
    card = (cent / "README.md").read_text()
    assert "No training record" not in card and "Zero-shot probabilistic" not in card
    assert "moe-ts centroids" in card and "k-means" in card
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": TINY, "train": {"steps": 1, "batch_size": 2, "warmup_steps": 1,
                                                           "wandb_mode": "disabled"}}))
    assert main(["pretrain", "--config", str(run), "--data", str(corpus), "--out", str(tmp_path / "run"),
                 "--init", str(cent)]) == 0
    final = tmp_path / "run" / "final"
    assert json.loads((final / "training.json").read_text())["conversion"] == record
    assert_credited(final, record)
    assert "starting from the weights of `cent`" in (final / "README.md").read_text()


def test_distill_carries_the_teachers_credit(converted_tiny, tmp_path):
    from data_prep.corpus import write_corpus
    from data_prep.series import Series

    teacher, record = converted_tiny
    series = [Series(f"s{i}", (np.sin(np.arange(n) / 3.0) * 5 + 10).astype(np.float32), "h", dataset="toy")
              for i, n in enumerate([120, 130])]
    write_corpus(series, tmp_path / "corpus")
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--data", str(tmp_path / "corpus"), "--context", "16",
                 "--horizon", "8", "--out", str(out), "--hidden", "8", "--epochs", "1", "--stride", "8",
                 "--alpha", "0", "--beta", "0", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert_credited(out, record)
    assert json.loads((out / "distill.json").read_text())["teacher"] == str(teacher)


def test_finetune_carries_the_credit_and_says_it_is_not_zero_shot(tmp_path, make_checkpoint):
    data = TESTS.parent / "data"
    data = data if (data / "ett" / "ETTh1.csv").is_file() else Path("/work/shared/data")
    source = make_checkpoint(tmp_path / "converted", seed=0, patch_size=16, max_seq_len=64,
                             moe=dict(num_experts=4, top_k=2, d_ff=16))
    record = {"from": "uni2ts", "source": "Salesforce/moirai-moe-1.0-R-small", "license": LICENSE}
    (source / "conversion.json").write_text(json.dumps(record, indent=1) + "\n")
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(source), "--method", "head", "--dataset", "etth1", "--data-dir",
                 str(data), "--out", str(out), "--steps", "1", "--eval-every", "1", "--batch-size", "2",
                 "--no-eval"]) == 0
    assert_credited(out, record)
    card = (out / "README.md").read_text()
    assert "Finetuned (`head`)" in card and "not zero-shot" in card and "No training record" not in card
    assert json.loads((out / "finetune.json").read_text())["config"]["method"] == "head"


def _eval(checkpoint: Path, out: Path, tmp_path: Path, *extra: str) -> Path:
    tsf = tmp_path / "in.tsf"
    tsf.write_text(TSF)
    assert main(["eval", "--checkpoint", str(checkpoint), "--tsf", str(tsf), "--out", str(out), "--num-samples", "4",
                 "--plot-series", "0", *extra]) == 0
    return out


def test_every_eval_appears_in_the_card_with_its_decoding(tiny_checkpoint, tmp_path):
    first = _eval(tiny_checkpoint, tmp_path / "eval_median", tmp_path, "--decode", "median")
    second = _eval(tiny_checkpoint, tmp_path / "eval_sample", tmp_path)
    out = tmp_path / "release"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--eval", str(first), "--eval", str(second),
                 "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "Evaluation `eval_median`" in card and "Evaluation `eval_sample`" in card
    assert "- decoding: decode median" in card and "- decoding: decode sample" in card
    assert card.index("eval_median") < card.index("decode median") < card.index("eval_sample")


def test_an_msft_export_gets_our_card_with_its_eval_and_licence(tmp_path):
    msft = tmp_path / "msft"
    shutil.copytree(LEGACY_MSFT, msft)
    results = _eval(msft, tmp_path / "eval", tmp_path)
    out = tmp_path / "release"
    assert main(["export", "--checkpoint", str(msft), "--eval", str(results), "--license", "apache-2.0",
                 "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "More Information Needed" not in card and "## Limitations" in card
    assert card_license(out) == "apache-2.0" and "in.tsf" in card and "- decoding:" in card
    assert "from moe_ts.msft.model import MSFTModel" in card


def test_a_failed_push_is_one_line_after_the_folder_is_complete(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import httpx
    import huggingface_hub.hub_mixin

    class OfflineApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", OfflineApi)
    out = tmp_path / "release"
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--push-to-hub", "me/tiny"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written, but the upload to the Hub as me/tiny failed (ConnectError" in err[0], err
    from moe_ts.io.loading import load_model

    load_model(out)
    assert 'from_pretrained("me/tiny")' in (out / "README.md").read_text()


def test_an_msft_folder_saved_anywhere_gets_our_card_not_the_library_stub(tmp_path):
    from moe_ts.msft.model import MSFTModel

    model = MSFTModel.from_pretrained(LEGACY_MSFT)
    model.save_pretrained(tmp_path / "msft", model_card_kwargs={"training": "Finetuned on toy data."})
    card = (tmp_path / "msft" / "README.md").read_text()
    assert "More Information Needed" not in card and "Finetuned on toy data." in card
    assert "## Intended use" in card and "MoE FFN with" in card
