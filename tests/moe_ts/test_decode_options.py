"""Decoding options: checked once, on construction; the families that do not decode name themselves in errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moe_ts.decode_options import DEFAULT_FEEDBACK_NOISE, DecodeOptions, DecodeOptionsError, accepted
from moe_ts.student.model import MLPForecaster, StudentConfig

ROOT = Path(__file__).resolve().parents[2]


def test_options_are_checked_on_construction():
    with pytest.raises(DecodeOptionsError, match="decode must be one of"):
        DecodeOptions(decode="greedy")
    with pytest.raises(DecodeOptionsError, match="feedback_noise applies to decode='sample', not 'median'"):
        DecodeOptions(decode="median", feedback_noise=0.3)
    with pytest.raises(DecodeOptionsError, match=r"feedback_noise must be in \[0, 1\], got 1.5"):
        DecodeOptions(feedback_noise=1.5)
    assert DecodeOptions().noise == DEFAULT_FEEDBACK_NOISE and DecodeOptions(feedback_noise=1).noise == 1.0


def test_patches_per_step_is_checked_against_the_model():
    assert DecodeOptions().patches_for(3) == 3 and DecodeOptions(patches_per_step=2).patches_for(3) == 2
    with pytest.raises(DecodeOptionsError, match=r"patches_per_step must be in 1..3"):
        DecodeOptions(patches_per_step=4).patches_for(3)
    with pytest.raises(DecodeOptionsError, match="decode='uni2ts' emits all predicted patches"):
        DecodeOptions(decode="uni2ts", patches_per_step=1).patches_for(3)


def test_a_forecaster_that_does_not_decode_checks_the_keywords_and_names_itself():
    assert accepted("X.forecast", {"decode": "median"}) == DecodeOptions(decode="median")
    with pytest.raises(TypeError, match=r"X.forecast\(\) got unexpected keyword argument\(s\) temperature"):
        accepted("X.forecast", {"decode": "median", "temperature": 0.7})
    student = MLPForecaster(StudentConfig(context_length=16, horizon=4, hidden=8, moving_avg=3)).eval()
    context = np.sin(np.arange(32, dtype=np.float32))
    student.forecast(context, 4, decode="median")  # what `moe-ts eval --decode median` passes: accepted, unused
    with pytest.raises(TypeError, match=r"MLPForecaster.forecast\(\) got unexpected keyword argument\(s\) temp"):
        student.forecast(context, 4, temp=1.0)
    with pytest.raises(DecodeOptionsError, match="feedback_noise applies"):
        student.forecast(context, 4, decode="mean", feedback_noise=0.2)


def test_the_options_load_without_torch():
    """The eval CLI checks its flags with them before a checkpoint (and torch) loads."""
    code = "import sys, moe_ts.decode_options; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
