"""Write model folders with the code at b49805e (before the issue-21 layout) + their recorded forecasts."""
import json, sys
from pathlib import Path
import numpy as np
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from moe_ts.msft import MSFTConfig
from moe_ts.msft_model import MSFTModel
from moe_ts.student import MLPForecaster, StudentConfig

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
t = np.arange(96)
ctx = np.stack([np.sin(2 * np.pi * t / 12) * 3 + 10 + 0.1 * rng.standard_normal(96) for _ in range(2)]).astype(np.float32)
ctx[1, 5:9] = np.nan
np.save(out / "context.npy", ctx)

def randomise(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for name, b in model.named_buffers():
        pass

torch.manual_seed(0)
cfg = ModelConfig(patch_size=8, max_seq_len=16, d_model=32, num_layers=2, num_heads=4,
                  moe=MoEConfig(num_experts=4, top_k=2, d_ff=16))
model = MoiraiMoEModel.from_model_config(cfg).eval()
randomise(model, 1)
model.save_pretrained(out / "moirai_moe")
f = model.forecast(ctx, 16, num_samples=8, seed=3)
np.save(out / "moirai_moe_forecast.npy", f.samples)

torch.manual_seed(0)
ccfg = ModelConfig(patch_size=8, max_seq_len=16, d_model=32, num_layers=2, num_heads=4,
                   moe=MoEConfig(num_experts=4, top_k=2, d_ff=16, gate="centroid"))
base = MoiraiMoEModel.from_model_config(ccfg).eval()
msft = MSFTModel.from_network(base, MSFTConfig(num_scales=2, lora_rank=4)).eval()
randomise(msft, 2)
msft.save_pretrained(out / "msft")
f = msft.forecast(ctx, 16, num_samples=8, seed=3)
np.save(out / "msft_forecast.npy", f.samples)

torch.manual_seed(0)
student = MLPForecaster(StudentConfig(context_length=48, horizon=12, hidden=16, moving_avg=5)).eval()
randomise(student, 3)
student.save_pretrained(out / "student")
f = student.forecast(np.nan_to_num(ctx, nan=10.0), 16, seed=3)
np.save(out / "student_forecast.npy", f.mean)  # a point forecast: no samples
print("ok")
