"""The prompts placed before the reprogrammed patches (Time-LLM's "prompt-as-prefix"; Time-DPD's soft prompt).

- Time-LLM (`soft_prompt = 0`): one text per series, embedded with the LLM's frozen token embeddings: the dataset
  description, the task, and statistics of the series' standardised context (its observed points): min, max,
  median (the lower median, as torch.median), the trend direction (sign of the summed first differences) and the
  top-5 lags of the circular autocorrelation (by FFT, lag 0 included, as the reference's `calcute_lags`).
- Time-DPD (`soft_prompt = N`): N trainable vectors, the same for every series, initialised from the embeddings of
  the hand-written prompt `soft_prompt_text` (its first N tokens, repeated when it has fewer).

Numbers are written with 4 decimals (the reference writes full float reprs: many more tokens for the same facts).
Shape legend: B series, L points, K lags.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

TOP_LAGS = 5
DEFAULT_DESCRIPTION = "a univariate time series observed at regular intervals."
DESCRIPTIONS = {  # the reference's ETT description; other datasets get the generic one unless given
    "etth1": "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric power long-term "
             "deployment.",
}
for _name in ("etth2", "ettm1", "ettm2"):
    DESCRIPTIONS[_name] = DESCRIPTIONS["etth1"]


def dataset_description(name: str | None) -> str:
    """The description text for a dataset name (case-insensitive), else the generic one."""
    return DESCRIPTIONS.get((name or "").lower(), DEFAULT_DESCRIPTION)


@dataclass
class InputStatistics:
    """Per-series statistics the text prompt states."""

    minimum: Tensor  # [B]
    maximum: Tensor  # [B]
    median: Tensor  # [B]
    trend: Tensor  # [B] sum of first differences (last − first)
    lags: Tensor  # [B, K] long


def top_lags(z_bl: Tensor, k: int = TOP_LAGS) -> Tensor:
    """[B, k] the lags of the k largest circular autocorrelations (FFT), largest first."""
    spectrum = torch.fft.rfft(z_bl.float(), dim=-1)
    corr_bl = torch.fft.irfft(spectrum * torch.conj(spectrum), n=z_bl.shape[-1], dim=-1)
    return torch.topk(corr_bl, min(k, z_bl.shape[-1]), dim=-1).indices


def input_statistics(z_bl: Tensor, observed_bl: Tensor | None = None) -> InputStatistics:
    """Statistics of standardised contexts [B, L] (missing values already 0) over their observed points (default
    all): a left-padded short context states its own min / max / median / trend, not the padding's zeros. The lags
    are those of the zero-filled context (0 is the series' mean: missing points add nothing to a product)."""
    if observed_bl is None:
        observed_bl = torch.ones_like(z_bl, dtype=torch.bool)
    length, seen_b = z_bl.shape[1], observed_bl.any(dim=1)
    inf, pos_bl = torch.full_like(z_bl, float("inf")), torch.arange(length, device=z_bl.device).expand_as(z_bl)
    first_b1 = torch.where(observed_bl, pos_bl, length).min(dim=1, keepdim=True).values.clamp(max=length - 1)
    last_b1 = torch.where(observed_bl, pos_bl, -1).max(dim=1, keepdim=True).values.clamp(min=0)

    def known(v_b: Tensor) -> Tensor:  # a row with no observed point states zeros
        return torch.where(seen_b, v_b, torch.zeros_like(v_b))

    return InputStatistics(
        minimum=known(torch.where(observed_bl, z_bl, inf).min(dim=1).values),
        maximum=known(torch.where(observed_bl, z_bl, -inf).max(dim=1).values),
        median=known(torch.where(observed_bl, z_bl, torch.full_like(z_bl, float("nan"))).nanmedian(dim=1).values),
        trend=known((z_bl.gather(1, last_b1) - z_bl.gather(1, first_b1))[:, 0]),  # the summed first differences
        lags=top_lags(z_bl))


def statistics_prompt(description: str, horizon: int, context_length: int, stats: InputStatistics, row: int) -> str:
    """Time-LLM's text prompt for series `row`."""
    lags = ", ".join(str(int(v)) for v in stats.lags[row].tolist())
    return (f"<|start_prompt|>Dataset description: {description} "
            f"Task description: forecast the next {horizon} steps given the previous {context_length} steps "
            f"information; Input statistics: min value {float(stats.minimum[row]):.4f}, "
            f"max value {float(stats.maximum[row]):.4f}, median value {float(stats.median[row]):.4f}, "
            f"the trend of input is {'upward' if float(stats.trend[row]) > 0 else 'downward'}, "
            f"top {TOP_LAGS} lags are : [{lags}]<|end_prompt|>")


def soft_prompt_text(description: str, horizon: int, context_length: int) -> str:
    """The hand-written prompt a Time-DPD soft prompt starts from (no per-series numbers: the vectors are shared)."""
    return (f"Dataset description: {description} Task description: forecast the next {horizon} steps given the "
            f"previous {context_length} steps information; Input statistics: min value, max value, median value, "
            f"the trend of input, top {TOP_LAGS} lags.")
