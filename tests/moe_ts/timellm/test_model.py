"""The Time-LLM / Time-DPD model over a tiny random Qwen2: what trains, what is saved, forecasts, bad input."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from moe_ts.timellm.forecasting import time_llm_loss
from moe_ts.timellm.model import TimeLLMModel

TRAINABLE = {"revin.weight", "revin.bias", "patch_embedding.conv.weight", "prototypes.map.weight",
             "prototypes.map.bias", *(f"reprogramming.{p}.{w}" for p in ("query", "key", "value", "out")
                                      for w in ("weight", "bias"))}


def _windows(n: int = 4, length: int = 64, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    rows = [3 + np.sin(2 * np.pi * (t + rng.integers(24)) / 12) + 0.1 * rng.normal(size=length) for _ in range(n)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


@pytest.mark.parametrize("soft_prompt", [0, 5])
def test_gradients_reach_exactly_the_trainable_parts(small_config, soft_prompt):
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=soft_prompt))
    model.train()
    time_llm_loss(model, _windows()).backward()
    heads = {f"heads.{h}.{w}" for h in (8, 16) for w in ("weight", "bias")}
    expected = TRAINABLE | heads | ({"soft_prompt"} if soft_prompt else set())
    reached = {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert reached == expected
    assert all(p.grad is None and not p.requires_grad for p in model.llm.parameters())
    assert model.num_parameters(trainable_only=True) == sum(p.numel() for n, p in model.named_parameters()
                                                            if n in expected)


def test_llm_weights_are_bit_identical_after_training_steps(small_config):
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=4))
    before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    trained_before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # all parameters handed over
    model.train()
    for s in range(3):
        opt.zero_grad()
        time_llm_loss(model, _windows(seed=s)).backward()
        opt.step()
    after = model.llm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.llm.training  # the LLM's dropout stays off while the rest trains
    assert all(not torch.equal(trained_before[k], v) for k, v in model.state_dict().items())


def test_save_load_gives_identical_forecasts_and_saves_no_llm_weight(small_config, tmp_path):
    from moe_ts.io.loading import load_model

    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=3))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    time_llm_loss(model, _windows()).backward()
    opt.step()  # weights other than their initial values
    model.save_pretrained(tmp_path / "m")
    series = [_windows(2, 70, seed=3)[0].numpy(), _windows(2, 48, seed=4)[1].numpy()]
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TimeLLMModel)
    np.testing.assert_array_equal(model.forecast(series, 16).mean, loaded.forecast(series, 16).mean)
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert set(saved) == set(model.state_dict()) and not any(k.startswith("llm.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == model.num_parameters(trainable_only=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "time_llm" and config["llm"] == str(small_config().llm)
    assert config["llm_hidden_size"] == 32 and config["llm_layers"] == 3


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_text_prompt_padding_does_not_change_a_series_forecast(small_config, tiny_gpt2_dir, arch):
    """Prompts of different token counts are left-padded and masked, positions counted from the first real token:
    a series' forecast is the same alone and in a batch with series whose prompts are longer or shorter (GPT-2's
    absolute positions see a shift that Qwen2's rotary ones, relative, do not)."""
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(**({"llm": str(tiny_gpt2_dir)} if arch == "gpt2" else {})))
    rng = np.random.default_rng(5)
    series = [_windows(1, 48)[0].numpy(), np.cumsum(rng.normal(size=48)), rng.standard_t(2, size=48) * 1e3]
    x = torch.tensor(np.stack(series), dtype=torch.float32)
    _, mask = model._prompt(model.revin.standardise(x, *model.revin.statistics(x)))
    lengths = mask.sum(1).tolist()
    assert len(set(lengths)) > 1, lengths  # the premise: prompts of different lengths, so some are padded
    together = model.forecast(series, 8).mean
    for i, s in enumerate(series):
        np.testing.assert_allclose(model.forecast([s], 8).mean[0], together[i], rtol=1e-5, atol=1e-5)


def test_shorter_horizon_is_the_head_prefix_and_an_untrained_one_is_one_line(small_config):
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config())
    series = [_windows(1, 48)[0].numpy()]
    np.testing.assert_array_equal(model.forecast(series, 5).mean, model.forecast(series, 8).mean[:, :5])
    with pytest.raises(ValueError, match=r"^prediction_length 17: .*trained for horizons 8, 16") as err:
        model.forecast(series, 17)
    assert "\n" not in str(err.value)


def test_context_shorter_than_one_patch_is_one_line(small_config):
    from moe_ts.typed_config import ConfigError

    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config())
    with pytest.raises(ValueError, match=r"^series 1: context has 15 points, shorter than one patch \(16\)$"):
        model.forecast([np.ones(48), np.ones(15)], 8, allow_short_context=True)
    with pytest.raises(ConfigError, match=r"^context_length 12 is shorter than one patch \(16 points\)$"):
        small_config(context_length=12)
    short = model.forecast([np.arange(30, dtype=float)], 8, allow_short_context=True)  # padded as missing
    assert np.isfinite(short.mean).all()


def test_llm_layers_keeps_the_first_k(small_config):
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(llm_layers=2))
    assert len(model.llm.layers) == 2 and model.config.llm_layers == 2
    from moe_ts.timellm.llm import LLMError

    with pytest.raises(LLMError, match=r"^--llm-layers 5: .* has 3 layers"):
        TimeLLMModel.build(small_config(llm_layers=5))


def test_a_bfloat16_cast_still_forecasts_close_to_float32(small_config):
    """`moe-ts eval --dtype bfloat16` casts the whole model: RevIN's statistics stay float32, so forecasts of a
    series far from zero stay close to the float32 ones."""
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=2))
    series = [1000 + _windows(1, 48)[0].numpy()]
    ref = model.forecast(series, 8).mean
    low = model.to(torch.bfloat16).forecast(series, 8).mean
    assert low.dtype == np.float32 and np.abs(low - ref).max() < 0.1 * np.abs(ref - 1000).max() + 0.05


def test_sizes_that_do_not_fit_the_llm_are_one_line(small_config, tmp_path):
    from moe_ts.io.hub import ModelFolderError
    from moe_ts.io.loading import load_model

    with pytest.raises(ValueError, match=r"^d_ff 40: exceeds the LLM's width 32"):
        TimeLLMModel.build(small_config(d_ff=40))
    torch.manual_seed(0)
    TimeLLMModel.build(small_config()).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "llm_hidden_size": 64}))
    with pytest.raises(ModelFolderError, match=r"^--llm .*: its width is 32, but these weights were trained on an "
                                               r"LLM with 64; load the LLM they were trained on$"):
        load_model(tmp_path / "m")


def _reference_forecast(model: TimeLLMModel, x_bl: torch.Tensor, horizon: int) -> torch.Tensor:
    """Time-LLM's forward written out from the paper's reference code (KimMeen/Time-LLM models/TimeLLM.py,
    layers/Embed.py, layers/StandardNorm.py) with this model's weights: RevIN, replication padding, patches,
    circular kernel-3 token convolution, prototypes = mapping_layer(vocabᵀ)ᵀ, per-head cross-attention, prompt
    before patches, last N hidden states cut to d_ff, head, RevIN inverse. The flattening is patch-major (this
    model's order; the reference's is feature-major, a permutation of a freshly initialised head's inputs)."""
    import math

    import torch.nn.functional as F

    from moe_ts.timellm.prompt import input_statistics, statistics_prompt

    cfg, b = model.config, x_bl.shape[0]
    mean = x_bl.mean(1, keepdim=True)
    std = torch.sqrt(x_bl.var(1, unbiased=False, keepdim=True) + cfg.eps)
    z = (x_bl - mean) / std
    zn = z * model.revin.weight + model.revin.bias
    padded = F.pad(zn[:, None], (0, cfg.stride), mode="replicate")[:, 0]
    n = (cfg.context_length - cfg.patch_len) // cfg.stride + 2
    patches = torch.stack([padded[:, i * cfg.stride:i * cfg.stride + cfg.patch_len] for i in range(n)], 1)
    w = model.patch_embedding.conv.weight  # [D, P, 3]: taps on the previous, same and next patch (circular)
    emb = (torch.roll(patches, 1, 1) @ w[:, :, 0].T + patches @ w[:, :, 1].T
           + torch.roll(patches, -1, 1) @ w[:, :, 2].T)
    vocab = model.llm.get_input_embeddings().weight
    protos = model.prototypes.map(vocab.T).T  # [S, E]
    r, heads, k = model.reprogramming, cfg.num_heads, cfg.d_ff
    q_ = r.query(emb).view(b, n, heads, k)
    k_, v_ = r.key(protos).view(-1, heads, k), r.value(protos).view(-1, heads, k)
    per_head = [torch.softmax(q_[:, :, h] @ k_[:, h].T / math.sqrt(k), dim=-1) @ v_[:, h] for h in range(heads)]
    series = r.out(torch.cat(per_head, -1))
    if cfg.soft_prompt:
        prompt = model.soft_prompt[None].expand(b, -1, -1)
    else:
        assert b == 1  # one series: its prompt needs no padding
        text = statistics_prompt(cfg.description, max(cfg.horizons), cfg.context_length, input_statistics(z), 0)
        prompt = model.llm.get_input_embeddings()(model.tokenizer(text, return_tensors="pt").input_ids)
    hidden = model.llm(inputs_embeds=torch.cat([prompt, series], 1)).last_hidden_state
    y = model.heads[str(horizon)](hidden[:, -n:, :cfg.d_ff].reshape(b, -1))
    return (y - model.revin.bias) / model.revin.weight * std + mean


@pytest.mark.parametrize("soft_prompt", [0, 3])
def test_forward_matches_the_reference_time_llm_computation(small_config, soft_prompt):
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=soft_prompt)).eval()
    with torch.no_grad():
        model.revin.weight.fill_(1.3)
        model.revin.bias.fill_(0.2)
    rows = 3 if soft_prompt else 1  # a text prompt: one series (no padding; tested above)
    x = _windows(rows, 48) * torch.tensor([1.0, 4.0, 0.5])[:rows, None]
    x[:, -5:] += torch.linspace(0, 2, 5)  # distinct last values: replication padding differs from zeros
    with torch.no_grad():
        got = model(x)
        for h in (8, 16):
            torch.testing.assert_close(got[h], _reference_forecast(model, x, h), rtol=1e-4, atol=1e-4)


def test_missing_targets_are_left_out_of_the_loss(small_config):
    """A window with gaps (a CSV's missing values) trains: NaN targets score nothing, NaN contexts are RevIN's."""
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config()).eval()
    windows = _windows(3, 64)
    windows[0, 50:53] = float("nan")  # targets
    windows[1, 10] = float("nan")  # context
    windows[2, 48:] = float("nan")  # no observed target at all
    loss = time_llm_loss(model, windows)
    with torch.no_grad():
        preds = model(windows[:, :48])
    ref = []
    for h in (8, 16):
        err = (preds[h] - windows[:, 48:48 + h]).numpy() ** 2
        ref.append(np.nanmean(err))
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(np.mean(ref), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_short_series_prompt_states_its_own_statistics(small_config):
    """forecast left-pads a 30-point series to the 48-point context: the text prompt's median is the observed
    points' (standardised), not the padding's 0."""
    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config())
    texts = []
    tokenizer = model.tokenizer

    def recording(batch, **kw):
        texts.extend(batch)
        return tokenizer(batch, **kw)

    model.tokenizer = recording
    x = 5.0 + np.sin(np.arange(30) / 2.0) + 0.1 * np.arange(30)
    model.forecast([x], 8, allow_short_context=True)
    z = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    assert len(texts) == 1 and f"median value {np.sort(z)[14]:.4f}," in texts[0], texts
    assert f"min value {z.min():.4f}," in texts[0] and f"max value {z.max():.4f}," in texts[0]


def test_placing_for_a_float32_evaluation_keeps_the_llm_at_its_device_precision(small_config, monkeypatch):
    """`moe-ts eval` / `forecast` place the model with `--dtype float32` by default: the trainable parts go to
    float32 but the frozen LLM stays at the device's LLM precision (bfloat16 on a CUDA card, simulated here),
    not doubled; asking for bfloat16 casts everything."""
    import moe_ts.timellm.model as timellm_model
    from moe_ts.device import place_model

    torch.manual_seed(0)
    model = TimeLLMModel.build(small_config(soft_prompt=2))
    monkeypatch.setattr(timellm_model, "default_llm_dtype", lambda device=None: torch.bfloat16)
    placed = place_model(model, "cpu", "float32")
    assert placed is model
    assert {p.dtype for p in model.llm.parameters()} == {torch.bfloat16}
    trained = {n: p.dtype for n, p in model.named_parameters() if not n.startswith("llm.")}
    assert trained and set(trained.values()) == {torch.float32}, trained
    assert np.isfinite(model.forecast([_windows(1, 48)[0].numpy()], 8).mean).all()
    place_model(model, "cpu", "bfloat16")
    assert {p.dtype for n, p in model.named_parameters()} == {torch.bfloat16}
