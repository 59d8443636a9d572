"""The lean decode loop (issue 24): KV caches written in place, RoPE's table built once per forecast, no host
sync among the loop's own operations, and the same numbers as re-encoding the whole sequence at every step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from moe_ts import attention, network
from moe_ts.attention import LayerCache, RopeTable, rope_angles
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.forecasting import prepare_decoder
from moe_ts.model import MoiraiMoEModel

P = 8
CONTEXTS = [np.sin(np.arange(61) / 3.0) * 4 + 1, np.arange(40.0), np.cos(np.arange(90) / 5.0)]
# Anything that reads a tensor's value back to the host (a device sync on a GPU).
SYNCS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero", "unique"}


def make_model(**overrides) -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=24, d_model=32, num_layers=2, num_heads=4,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24), **overrides)
    return MoiraiMoEModel(cfg).double().eval()


class CallLog(TorchFunctionMode):
    """Records the name of every torch function and tensor method called while `on`, and the size of what
    each `torch.cat` returns."""

    def __init__(self) -> None:
        super().__init__()
        self.on, self.names, self.cat_sizes = True, [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.on:
            self.names.append(getattr(func, "__name__", str(func)))
            if func is torch.cat:
                self.cat_sizes.append(out.numel())
        return out


@torch.no_grad()
def test_steps_write_the_caches_in_place_and_match_recompute():
    model = make_model()
    cached, _, _ = prepare_decoder(model, CONTEXTS, use_cache=True, extra_tokens=3)
    recompute, _, _ = prepare_decoder(model, CONTEXTS, use_cache=False)
    torch.testing.assert_close(cached.prefill(), recompute.prefill(), rtol=0, atol=1e-12)
    buffers = [(c.keys.data_ptr(), c.values.data_ptr()) for c in cached.caches]
    n = cached.caches[0].length
    context_keys = cached.caches[0].keys[:, :, :n].numel()
    patches = torch.randn(3, 3, 1, P, dtype=torch.float64)
    for i in range(3):
        with CallLog() as log:
            hidden = cached.step(patches[i])
        # the step copies its own token in: no concatenation as large as the keys held (RoPE's per-token ones stay)
        assert log.cat_sizes and max(log.cat_sizes) < context_keys
        torch.testing.assert_close(hidden, recompute.step(patches[i]), rtol=0, atol=1e-12)
    assert [(c.keys.data_ptr(), c.values.data_ptr()) for c in cached.caches] == buffers
    assert [c.length for c in cached.caches] == [n + 3] * 2


@torch.no_grad()
def test_a_decoder_stepped_past_its_reservation_grows_and_agrees():
    model = make_model()
    reserved, _, _ = prepare_decoder(model, CONTEXTS, extra_tokens=4)
    unreserved, _, _ = prepare_decoder(model, CONTEXTS)
    torch.testing.assert_close(reserved.prefill(), unreserved.prefill(), rtol=0, atol=0)
    for patch in torch.randn(4, 3, 1, P, dtype=torch.float64):
        torch.testing.assert_close(unreserved.step(patch), reserved.step(patch), rtol=0, atol=0)
    torch.testing.assert_close(unreserved.tokens, reserved.tokens, rtol=0, atol=0)
    torch.testing.assert_close(unreserved.positions, reserved.positions, rtol=0, atol=0)


def test_layer_cache_append_returns_everything_held_and_grows():
    keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    cache = LayerCache.empty(2, 3, 2, 4, torch.float32, "cpu")
    for lo, hi in ((0, 1), (1, 3), (3, 5)):  # the third append is past the capacity of 2
        k, v = cache.append(keys[:, :, lo:hi], values[:, :, lo:hi])
        torch.testing.assert_close(k, keys[:, :, :hi], rtol=0, atol=0)
        torch.testing.assert_close(v, values[:, :, :hi], rtol=0, atol=0)
    assert cache.length == 5


def test_rope_table_lookup_equals_the_direct_angles():
    table = RopeTable(16, 10000.0, 300, "cpu")
    positions = torch.randint(0, 300, (4, 7))
    for looked_up, direct in zip(table.lookup(positions), rope_angles(positions, 16, 10000.0)):
        torch.testing.assert_close(looked_up, direct, rtol=0, atol=1e-6)  # bit-equal here; rounding elsewhere
    # and the direct angles are the textbook ones: position · base^(-2i/rot) for rot = 8 rotated dims
    expected = positions[..., None].double() * 10000.0 ** (-torch.arange(0, 8, 2).double() / 8)
    torch.testing.assert_close(rope_angles(positions, 16, 10000.0)[0][:, 0].double(), expected.cos(), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("decode", ["sample", "median", "uni2ts"])
def test_rope_angles_are_computed_once_per_forecast(monkeypatch, decode):
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return rope_angles(*args, **kwargs)

    monkeypatch.setattr(attention, "rope_angles", counted)
    monkeypatch.setattr(network, "rope_angles", counted)
    model = make_model(**({"time_ids": "observed"} if decode == "uni2ts" else {}))
    model.forecast(CONTEXTS, 5 * P, num_samples=3, seed=0, decode=decode)
    assert len(calls) == 1  # the table, built once; 5 steps × 2 layers × (q, k) before


@pytest.mark.parametrize("decode", ["sample", "mean"])
def test_the_step_loop_reads_nothing_back_to_the_host(monkeypatch, decode):
    """Between the first and the last step's distribution, outside the network's own forward (its MoE
    dispatcher is measured elsewhere), no operation reads a tensor's value: sampling, damping and the
    decoder's bookkeeping stay on the device."""
    model = make_model()
    log = CallLog()
    steps = []
    real_forward, real_distribution = model.forward, model.head.distribution

    def forward(*args, **kwargs):
        log.on = False
        try:
            return real_forward(*args, **kwargs)
        finally:
            log.on = True

    def distribution(hidden):
        steps.append(len(log.names))  # where in the log each step begins
        return real_distribution(hidden)

    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(model.head, "distribution", distribution)
    with log:
        model.forecast(CONTEXTS, 6 * P, num_samples=4, seed=0, decode=decode, batch_size=8)
    assert len(steps) == 6
    in_loop = log.names[steps[0]:steps[-1]]
    assert len(in_loop) > 50  # the log saw the loop's operations
    assert not SYNCS & set(in_loop), sorted(SYNCS & set(in_loop))
