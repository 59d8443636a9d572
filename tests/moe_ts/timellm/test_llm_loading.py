"""Finding the frozen LLM: names that cannot be found offline and folders that are not decoder LMs, one line each."""
import json

import pytest

from moe_ts.timellm.llm import LLMError, load_llm


def test_unknown_name_offline_is_one_line_naming_it():
    with pytest.raises(LLMError) as err:
        load_llm("nobody-at-all/no-such-model-7B")
    text = str(err.value)
    assert text.startswith("--llm nobody-at-all/no-such-model-7B: no such local folder and not in the Hugging Face "
                           "cache") and "HF_HUB_OFFLINE=1" in text and "\n" not in text


@pytest.mark.parametrize("config, words", [
    ({"model_type": "vit", "hidden_size": 32}, "model_type 'vit' is not a causal or base decoder language model"),
    ({"model_type": "t5", "d_model": 32, "is_encoder_decoder": True}, "model_type 't5' is not a causal"),
    ({"patch_size": 16, "d_model": 32}, "not a transformers language model"),  # a moe-ts model folder
    (None, "the folder has no config.json: not a transformers model folder"),
])
def test_folder_that_is_not_a_decoder_lm_is_one_line(tmp_path, config, words):
    folder = tmp_path / "not-an-llm"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LLMError) as err:
        load_llm(str(folder))
    assert str(err.value).startswith(f"--llm {folder}: ") and words in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_without_its_tokenizer_is_one_line(tiny_llm_dir, tmp_path):
    """transformers quietly builds an empty tokenizer for such a folder; every text prompt would vanish."""
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_llm_dir, folder)
    for path in folder.glob("*token*"):
        path.unlink()
    with pytest.raises(LLMError) as err:
        load_llm(str(folder))
    assert str(err.value).startswith(f"--llm {folder}: its tokenizer does not fit the model (0 tokens for ")
    assert "\n" not in str(err.value)


def test_local_folder_loads_frozen_with_no_revision(tiny_llm_dir):
    loaded = load_llm(str(tiny_llm_dir), layers=1)
    assert loaded.revision is None and loaded.name == str(tiny_llm_dir.resolve()) and loaded.num_layers == 1
    assert not any(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None


def test_hub_id_found_in_the_cache_records_its_commit(tiny_llm_dir, tmp_path, monkeypatch, small_config):
    """A Hub id is found as transformers finds it (offline: in the Hugging Face cache); the folder records the
    snapshot's commit and loads the LLM again by id and commit."""
    import shutil

    import huggingface_hub.constants
    import numpy as np
    import torch

    from moe_ts.io.loading import load_model
    from moe_ts.timellm.model import TimeLLMModel

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--tiny-org--tiny-qwen2"
    shutil.copytree(tiny_llm_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(llm="tiny-org/tiny-qwen2"))
    assert (model.config.llm, model.config.llm_revision) == ("tiny-org/tiny-qwen2", commit)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["llm"], config["llm_revision"]) == ("tiny-org/tiny-qwen2", commit)
    series = [np.sin(np.arange(60) / 3)]
    np.testing.assert_array_equal(load_model(tmp_path / "m").forecast(series, 8).mean, model.forecast(series, 8).mean)
