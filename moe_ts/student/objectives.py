"""TimeDistill's losses (arXiv 2502.15016; docs/ARCHITECTURE.md §8): student vs truth, vs the teacher's
forecast and vs the teacher's (regressed) hidden features.

    loss = MSE(student, truth) + α·(L_freq + L_ms)(student forecast, teacher forecast)
                               + β·(L_freq + L_ms)(student feature, regressed teacher feature)

- L_ms: the mean over 4 scales of the MSE, each scale the previous one average-pooled by 2 (kernel 2,
  stride 2, a trailing odd point dropped), the first scale the sequence itself.
- L_freq: KL(teacher ‖ student) between softmax(|rfft(x)| / τ) over the frequency bins without the DC bin,
  τ = 0.5; summed over bins, averaged over series. (The reference code's `F.kl_div(..., reduction="mean")`
  also divides by the number of bins: a constant factor, absorbed by α and β.)
- Features are [B, W] vectors treated as sequences along the width, as the reference code does.

Everything is computed on the per-window normalised scale (the student's RevIN scale). Terms whose weight
is 0 are not computed at all, so α = β = 0 is exactly supervised training.

Shape legend: B series, T sequence length (horizon or width), F frequency bins.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_SCALES = 4
TAU = 0.5


def masked_mse(pred_bt: Tensor, truth_bt: Tensor) -> Tensor:
    """MSE over the observed (non-NaN) values of `truth_bt`."""
    observed = ~torch.isnan(truth_bt)
    diff = torch.where(observed, pred_bt - torch.nan_to_num(truth_bt), torch.zeros_like(pred_bt))
    return (diff ** 2).sum() / observed.sum().clamp(min=1)


def multiscale_mse(student_bt: Tensor, teacher_bt: Tensor, num_scales: int = NUM_SCALES) -> Tensor:
    """L_ms: mean over `num_scales` scales (average pooling by 2 between scales) of the MSE."""
    total = student_bt.new_zeros(())
    s, t = student_bt[:, None], teacher_bt[:, None]  # [B, 1, T] for avg_pool1d
    for scale in range(num_scales):
        if scale:
            s, t = F.avg_pool1d(s, 2), F.avg_pool1d(t, 2)
        total = total + F.mse_loss(s, t)
    return total / num_scales


def spectral_kl(student_bt: Tensor, teacher_bt: Tensor, tau: float = TAU) -> Tensor:
    """L_freq: KL(teacher ‖ student) of softmax(|rfft| / tau) over the non-DC bins, mean over series."""
    s_bf = torch.fft.rfft(student_bt.float(), dim=-1).abs()[:, 1:]
    t_bf = torch.fft.rfft(teacher_bt.float(), dim=-1).abs()[:, 1:]
    log_s = F.log_softmax(s_bf / tau, dim=-1)
    log_t = F.log_softmax(t_bf / tau, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean()


@dataclass
class DistillLoss:
    """The total loss and its (unweighted) parts; a part whose weight is 0 is None."""

    total: Tensor
    supervised: Tensor
    pred_freq: Tensor | None = None
    pred_ms: Tensor | None = None
    feat_freq: Tensor | None = None
    feat_ms: Tensor | None = None

    def parts(self) -> dict[str, float]:
        """Every computed part as a float (for logs)."""
        names = ("total", "supervised", "pred_freq", "pred_ms", "feat_freq", "feat_ms")
        return {n: float(getattr(self, n).detach()) for n in names if getattr(self, n) is not None}


def distill_loss(pred_bh: Tensor, truth_bh: Tensor, teacher_pred_bh: Tensor | None, feat_bw: Tensor,
                 teacher_feat_bw: Tensor | None, alpha: float = 1.0, beta: float = 1.0,
                 tau: float = TAU) -> DistillLoss:
    """TimeDistill's loss (module docstring); `teacher_feat_bw` is already mapped to the student's width."""
    supervised = masked_mse(pred_bh, truth_bh)
    out = DistillLoss(total=supervised, supervised=supervised)
    if alpha:
        if teacher_pred_bh is None:
            raise ValueError("alpha > 0 needs the teacher's forecast")
        out.pred_freq = spectral_kl(pred_bh, teacher_pred_bh, tau)
        out.pred_ms = multiscale_mse(pred_bh, teacher_pred_bh)
        out.total = out.total + alpha * (out.pred_freq + out.pred_ms)
    if beta:
        if teacher_feat_bw is None:
            raise ValueError("beta > 0 needs the teacher's features")
        out.feat_freq = spectral_kl(feat_bw, teacher_feat_bw, tau)
        out.feat_ms = multiscale_mse(feat_bw, teacher_feat_bw)
        out.total = out.total + beta * (out.feat_freq + out.feat_ms)
    return out
