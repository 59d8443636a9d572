"""Devices everywhere (issue 24): `--device` / `--dtype` resolution, `from_pretrained(device=, dtype=)`, and a
forecast and an eval run through the explicit device path with no tensor created anywhere else.

The explicit-path tests make torch's default device `meta` while they run: a tensor created without the
model's device (a factory call missing `device=`) lands on `meta`, and a dispatch mode fails on any operation
whose result is not on the CPU, the device asked for. CUDA itself is covered by the `gpu`-marked tests below.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.device import DeviceError, place_model, resolve_device, resolve_dtype
from moe_ts.forecasting import prepare_decoder
from moe_ts.model import MoiraiMoEModel

P = 8
CONTEXTS = [np.sin(np.arange(61) / 3.0) * 4 + 1, np.arange(40.0), np.cos(np.arange(90) / 5.0)]


def make_model(**overrides) -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=24, d_model=32, num_layers=2, num_heads=4,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24), **overrides)
    return MoiraiMoEModel(cfg).eval()


@torch.no_grad()
def first_step_mean(model: MoiraiMoEModel) -> torch.Tensor:
    """The mean of the first forecast patch's distribution [B, P] on the original scale (no sampling)."""
    decoder, loc, scale = prepare_decoder(model, CONTEXTS)
    return (loc[:, -1] + scale[:, -1] * model.head.distribution(decoder.prefill()).mean).cpu()


class OnlyOn(TorchDispatchMode):
    """Records every operation whose result is a tensor off `device`."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.ops, self.off = torch.device(device), 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device != self.device:
                self.off.append(f"{func} -> {t.device}")
        return out


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ----------------------------------------------------------------------------- resolution


def test_auto_and_cpu_resolve_to_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == resolve_device(None) == resolve_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_one_line(no_cuda, spec):
    with pytest.raises(DeviceError, match="CUDA is not available") as err:
        resolve_device(spec)
    assert "\n" not in str(err.value) and spec in str(err.value) and "--device cpu" in str(err.value)


def test_cuda_index_past_the_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "mps", "cuda:-1"])  # (a "gpu" id would mark it gpu)
def test_unknown_devices_are_refused(spec):
    with pytest.raises(DeviceError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_dtypes():
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) is torch.float32
    assert resolve_dtype("bfloat16", cpu) is torch.bfloat16
    assert resolve_dtype(torch.float64, cpu) is torch.float64
    with pytest.raises(DeviceError, match="must be one of float32, bfloat16, float64"):
        resolve_dtype("half", cpu)


# ----------------------------------------------------------------------------- the Python API


def test_from_pretrained_places_the_model(tmp_path):
    make_model().save_pretrained(tmp_path / "ck")
    model = MoiraiMoEModel.from_pretrained(tmp_path / "ck", device="cpu", dtype="float64")
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float64)}
    assert {p.dtype for p in MoiraiMoEModel.from_pretrained(tmp_path / "ck").parameters()} == {torch.float32}


def test_from_pretrained_refuses_a_missing_device_before_loading(no_cuda, tmp_path):
    with pytest.raises(DeviceError, match="CUDA is not available"):  # not "no such folder": checked first
        MoiraiMoEModel.from_pretrained(tmp_path / "does-not-exist", device="cuda")


def test_bfloat16_weights_predict_close_to_the_float32_reference():
    model = make_model()
    reference = first_step_mean(model)
    place_model(model, "cpu", "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    low = first_step_mean(model)
    assert low.dtype == torch.float32  # the mixture is evaluated in float32 whatever the weights
    torch.testing.assert_close(low, reference, rtol=0.05, atol=0.05)
    assert np.isfinite(model.forecast(CONTEXTS, 3 * P, num_samples=8, seed=0).samples).all()


# ----------------------------------------------------------------------------- the explicit device path


@pytest.mark.parametrize("decode", ["sample", "median", "uni2ts"])
def test_forecast_creates_every_tensor_on_the_model_device(decode):
    model = place_model(make_model(time_ids="observed"), "cpu")
    check = OnlyOn("cpu")
    with torch.device("meta"), check:
        out = model.forecast(CONTEXTS, 3 * P, num_samples=4, seed=0, decode=decode)
    assert out.samples.shape == (3, 4, 3 * P) and np.isfinite(out.samples).all()
    assert check.ops > 100 and not check.off, check.off[:5]


def test_group_forecast_creates_every_tensor_on_the_model_device():
    model = place_model(make_model(time_ids="observed", variate_bias=True), "cpu")
    check = OnlyOn("cpu")
    with torch.device("meta"), check:
        out = model.forecast_group(np.stack([c[:40] for c in CONTEXTS]), 2 * P, num_samples=3, seed=0)
    assert out.samples.shape == (3, 3, 2 * P)
    assert check.ops > 100 and not check.off, check.off[:5]


def test_eval_runs_on_the_explicit_device(tmp_path, monkeypatch):
    from eval.run import main

    make_model().save_pretrained(tmp_path / "ck")
    rng = np.random.default_rng(0)
    rows = [f"T{i}:2000-01-01 00-00-00:" + ",".join(f"{v:.3f}" for v in 10 + rng.normal(size=30).cumsum())
            for i in range(3)]
    tsf = tmp_path / "small.tsf"
    tsf.write_text("@relation small\n@attribute series_name string\n@attribute start_timestamp date\n"
                   "@frequency yearly\n@horizon 4\n@missing false\n@equallength true\n@data\n" + "\n".join(rows) + "\n")
    check = OnlyOn("cpu")
    real_forecast, calls = MoiraiMoEModel.forecast, []

    def forecast(self, *args, **kwargs):  # the model's forecasts inside the eval: nothing on the default device
        calls.append((next(self.parameters()).device, next(self.parameters()).dtype))
        with torch.device("meta"):
            return real_forecast(self, *args, **kwargs)

    monkeypatch.setattr(MoiraiMoEModel, "forecast", forecast)
    with check:  # the whole eval (loading, forecasting, metrics): every tensor on the CPU
        assert main(["--checkpoint", str(tmp_path / "ck"), "--tsf", str(tsf), "--out", str(tmp_path / "out"),
                     "--num-samples", "4", "--plot-series", "0", "--device", "cpu", "--dtype", "float64"]) == 0
    assert calls and set(calls) == {(torch.device("cpu"), torch.float64)}  # placed and cast as asked
    assert check.ops > 100 and not check.off, check.off[:5]
    assert (tmp_path / "out" / "results.csv").exists()


def test_eval_refuses_cuda_in_one_line(no_cuda, tmp_path, capsys):
    from eval.run import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--tsf", str(tmp_path / "x.tsf"), "--out", str(tmp_path / "o"),
              "--device", "cuda:1"])
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- CUDA (skipped without a GPU)


@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["sample", "median", "uni2ts"])
def test_cuda_forecast_keeps_every_tensor_on_the_gpu_and_matches_the_cpu(decode):
    model = make_model(time_ids="observed")
    cpu_mean = first_step_mean(model)
    place_model(model, "cuda")
    check = OnlyOn("cuda:0")
    with check:
        gpu = model.forecast(CONTEXTS, 3 * P, num_samples=64, seed=0, decode=decode)
    # host-side: the contexts are read (CPU) and the forecast copied out once; everything between is on the GPU
    assert check.ops - len(check.off) > 100 and len(check.off) < 0.05 * check.ops, check.off[:10]
    assert gpu.samples.shape == (3, 64, 3 * P) and np.isfinite(gpu.samples).all()
    torch.testing.assert_close(first_step_mean(model), cpu_mean, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_bfloat16_predicts_close_to_float32(tmp_path):
    make_model().save_pretrained(tmp_path / "ck")
    reference = first_step_mean(MoiraiMoEModel.from_pretrained(tmp_path / "ck", device="cuda"))
    low = first_step_mean(MoiraiMoEModel.from_pretrained(tmp_path / "ck", device="cuda", dtype="bfloat16"))
    torch.testing.assert_close(low, reference, rtol=0.05, atol=0.05)


@pytest.mark.gpu
def test_cuda_eval_and_forecast_cli_run_on_the_gpu(tmp_path):
    from cli.forecast import main as forecast_main

    make_model().save_pretrained(tmp_path / "ck")
    csv = tmp_path / "in.csv"
    csv.write_text("item_id,timestamp,target\n" + "".join(f"a,2020-01-{d:02d},{np.sin(d):.4f}\n" for d in range(1, 29)))
    assert forecast_main(["--checkpoint", str(tmp_path / "ck"), "--input", str(csv), "--out", str(tmp_path / "o.csv"),
                          "--horizon", "5", "--device", "cuda:0", "--num-samples", "8"]) == 0
    assert (tmp_path / "o.csv").exists()


@pytest.mark.gpu
def test_host_tensors_reach_the_gpu_through_pinned_memory(monkeypatch):
    from moe_ts import device as device_module

    pinned = []
    real_pin = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(1) or real_pin(self, *a))
    t = torch.arange(10.0)
    moved = device_module.to_device(t, torch.device("cuda", 0))
    assert moved.device.type == "cuda" and pinned == [1]
    torch.testing.assert_close(moved.cpu(), t)
    assert device_module.to_device(t, torch.device("cpu")) is t


@pytest.mark.parametrize("command", [
    ["forecast", "--checkpoint", "{ck}", "--input", "{tmp}/in.csv", "--out", "{tmp}/o.csv", "--horizon", "3"],
    ["eval", "--checkpoint", "{ck}", "--tsf", "{tmp}/x.tsf", "--out", "{tmp}/o"],
    ["finetune", "--checkpoint", "{ck}", "--method", "full", "--dataset", "etth1", "--out", "{tmp}/o"],
    ["distill", "--teacher", "{ck}", "--dataset", "m1_yearly", "--context", "16", "--horizon", "8", "--out", "{tmp}/o"],
    ["centroids", "--checkpoint", "{ck}", "--data", "{tmp}/corpus", "--out", "{tmp}/o"],
], ids=lambda c: c[0])
def test_every_model_command_refuses_a_missing_cuda_in_one_line(tmp_path, command):
    """A real `moe-ts` process on this CUDA-less machine (CUDA hidden too): one line, naming the device."""
    import os
    import subprocess
    import sys

    make_model().save_pretrained(tmp_path / "ck")
    (tmp_path / "in.csv").write_text("item_id,timestamp,target\n" + "".join(f"a,2020-01-{d:02d},{d}\n" for d in range(1, 20)))
    args = [a.format(ck=tmp_path / "ck", tmp=tmp_path) for a in command] + ["--device", "cuda:0"]
    proc = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cuda:0" in lines[0] and "CUDA is not available" in lines[0], proc.stderr[-2000:]
