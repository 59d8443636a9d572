"""How the MoE model decodes (docs/ARCHITECTURE.md §2, "Forecasting"): the decode modes and `DecodeOptions`,
the keywords of `forecast` checked once, on construction (and against a model by `patches_for`).

Torch-free, so the eval CLI checks its flags with it before anything heavy loads. The model families that do
not decode autoregressively (the student, MSFT) accept the same keywords through `accepted`,
which checks them and names the forecaster in any error; they do not use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DECODE_MODES = ("median", "mean", "sample", "uni2ts")
HEADS = ("next", "horizon")  # which head decodes: the next-patch head, or the long-horizon head (horizon_patches)
MEDIAN_DRAWS = 100  # draws per step for the fed-back median ("median" mode) when fewer samples are asked for
DEFAULT_FEEDBACK_NOISE = 0.5  # decode="sample": share of each draw's deviation that is fed back (EXPERIMENTS.md)


class DecodeOptionsError(ValueError):
    """A decoding option that does not apply; `flag_message` says it in the eval CLI's flag names."""

    def __init__(self, message: str, flag_message: str) -> None:
        super().__init__(message)
        self.flag_message = flag_message


@dataclass(frozen=True)
class DecodeOptions:
    """How `forecast` decodes (the module docstring): its keywords, checked once, on construction, and against
    a model by `patches_for`. The eval CLI checks its flags with it. The other families accept these keywords,
    check them and do not use them: the student does not decode, MSFT always feeds back each scale's median."""

    decode: str = "sample"
    patches_per_step: int | None = None  # None: all the patches of the decoding head (predict_patches / horizon_patches)
    feedback_noise: float | None = None  # decode="sample" only; None: DEFAULT_FEEDBACK_NOISE
    use_kv_cache: bool = True  # False: re-encode the whole sequence at each step (the cache's reference)
    head: str = "next"  # "horizon": decode with the long-horizon head, horizon_patches per step

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise DecodeOptionsError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}",
                                     f"--decode must be one of {', '.join(DECODE_MODES)}, got {self.decode}")
        if self.head not in HEADS:
            raise DecodeOptionsError(f"head must be one of {HEADS}, got {self.head!r}",
                                     f"--head must be one of {', '.join(HEADS)}, got {self.head}")
        if self.head == "horizon" and self.decode == "uni2ts":
            raise DecodeOptionsError("decode='uni2ts' decodes with the next-patch head; head='horizon' does not apply",
                                     "--decode uni2ts decodes with the next-patch head; --head horizon does not apply")
        if self.feedback_noise is None:
            return
        if self.decode != "sample":
            raise DecodeOptionsError(f"feedback_noise applies to decode='sample', not {self.decode!r}",
                                     f"--feedback-noise applies to --decode sample, not {self.decode}")
        if not 0.0 <= self.feedback_noise <= 1.0:
            raise DecodeOptionsError(f"feedback_noise must be in [0, 1], got {self.feedback_noise}",
                                     f"--feedback-noise must be in [0, 1], got {self.feedback_noise:g}")

    @property
    def noise(self) -> float:
        """The share of each draw's deviation that decode="sample" feeds back."""
        return DEFAULT_FEEDBACK_NOISE if self.feedback_noise is None else float(self.feedback_noise)

    def patches_for(self, predict_patches: int, horizon_patches: int = 0) -> int:
        """Patches each step emits for a model predicting `predict_patches` per position with its next-patch head
        and `horizon_patches` with its long-horizon head (0: none), decoding with `head` (K: that head's)."""
        if self.head == "horizon":
            if horizon_patches < 1:
                raise DecodeOptionsError(
                    "head='horizon' needs a model with a long-horizon head (model.horizon_patches > 0)",
                    "--head horizon: the model has no long-horizon head (its horizon_patches is 0)")
            predict_patches, field_name = horizon_patches, "horizon_patches"
        else:
            field_name = "predict_patches"
        per_step = predict_patches if self.patches_per_step is None else self.patches_per_step
        if not 1 <= per_step <= predict_patches:
            raise DecodeOptionsError(
                f"patches_per_step must be in 1..{predict_patches} (the model's {field_name}), "
                f"got {self.patches_per_step}",
                f"--patches-per-step {self.patches_per_step}: the model predicts {predict_patches} patch(es) per "
                f"position with its {self.head} head (allowed 1..{predict_patches})")
        if self.decode == "uni2ts" and per_step != predict_patches:
            raise DecodeOptionsError(
                "decode='uni2ts' emits all predicted patches per step; patches_per_step does not apply",
                "--decode uni2ts emits all predicted patches per step; --patches-per-step does not apply")
        return per_step


def accepted(owner: str, decoding: dict[str, Any]) -> DecodeOptions:
    """`decoding` (keywords a caller written for the MoE model passes) checked as `DecodeOptions`; a keyword
    that is not a decoding option is a TypeError naming `owner` (e.g. "MLPForecaster.forecast")."""
    try:
        return DecodeOptions(**decoding)
    except TypeError:
        unknown = sorted(set(decoding) - set(DecodeOptions.__dataclass_fields__))
        raise TypeError(f"{owner}() got unexpected keyword argument(s) {', '.join(unknown)}") from None
