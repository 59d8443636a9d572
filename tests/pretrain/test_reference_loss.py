"""Reference loss curve (docs/ARCHITECTURE.md §4): the debug config's 30 pretraining steps against the saved curve.

The run is deterministic on one machine; across x86 CPUs float rounding differs and the curves drift
apart as training goes on, so steps 1-8 are compared one by one and tightly, later steps as coarse block
means (see pretrain/reference_curve.py for the measured drift and the changes the check catches).
When a change of the curve is intended: `python -m pretrain.reference_curve --write` and commit the JSON.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from pretrain.reference_curve import (BLOCKS, DEBUG_CONFIG, REFERENCE, TIGHT_STEPS, WRITE_COMMAND, compare_curves,
                                      config_dict, failure_message, format_curve, load_reference, run_curve,
                                      with_defaults)


@pytest.fixture(scope="module")
def reference() -> dict:
    return load_reference(REFERENCE)


def test_debug_run_matches_reference_curve(tmp_path, reference):
    # About 5 s on the 2-core CI machine, so `make test-fast` runs it too; its time is watched by the suite's
    # `--durations` report, not asserted here (a busy machine would fail a wall-clock limit).
    threads = torch.get_num_threads()
    curve, summary = run_curve(DEBUG_CONFIG, tmp_path)
    assert torch.get_num_threads() == threads  # the config's num_threads does not leak into later tests
    problems = compare_curves(reference, curve, summary, config_dict(DEBUG_CONFIG))
    assert not problems, (failure_message(problems, reference) + "\n\ncurve now vs reference:\n"
                          + format_curve(curve, reference["curve"]))


def test_reference_file_records_what_produced_it(reference):
    assert reference["command"] == WRITE_COMMAND
    assert reference["torch"] and reference["numpy"] and reference["deepspeed"]
    assert with_defaults(reference["run_config"]) == config_dict(DEBUG_CONFIG), (
        f"configs/debug.yaml changed since {REFERENCE.name} was written; regenerate it with `{WRITE_COMMAND}`")
    steps = [r["step"] for r in reference["curve"]]
    assert steps == list(range(1, reference["run_config"]["train"]["steps"] + 1))
    assert steps[-1] >= BLOCKS[-1][1] > BLOCKS[0][0] == TIGHT_STEPS + 1
    assert all(math.isfinite(r[k]) for r in reference["curve"] for k in ("loss", "nll", "aux"))
    first, last = reference["curve"][:5], reference["curve"][-5:]
    assert sum(r["loss"] for r in last) < sum(r["loss"] for r in first)  # the reference run learns


def _shifted(reference: dict, step: int, key: str, factor: float = 1.0, offset: float = 0.0) -> list[dict]:
    curve = copy.deepcopy(reference["curve"])
    curve[step - 1][key] = curve[step - 1][key] * factor + offset
    return curve


def test_comparison_accepts_rounding_and_rejects_changes(reference):
    """The comparison itself, without training: what passes and what fails, and what the message names."""
    summary, run_config = reference["corpus"], reference["run_config"]

    def problems(curve: list[dict], **kw) -> list[str]:
        return compare_curves(reference, curve, kw.get("summary", summary), kw.get("run_config", run_config))

    assert problems(reference["curve"]) == []
    # rounding-sized noise everywhere (1e-5 relative) passes
    noisy = [{**r, **{k: r[k] * (1 + 1e-5 * (-1) ** r["step"]) for k in ("loss", "nll", "aux")}}
             for r in reference["curve"]]
    assert problems(noisy) == []
    # a 0.3 % change of one early loss fails and is named
    found = problems(_shifted(reference, 3, "loss", factor=1.003))
    assert len(found) == 1 and found[0].startswith("step 3 loss")
    # an aux shift of 5e-4 at step 2 fails
    assert [p.split(":")[0] for p in problems(_shifted(reference, 2, "aux", offset=5e-4))] == ["step 2 aux"]
    # late steps: a 10 % shift of one step moves its block mean by ~1.25 %: tolerated; a NaN is not
    assert problems(_shifted(reference, 20, "nll", factor=1.10)) == []
    assert any("mean of steps 17-24 nll" in p for p in problems(_shifted(reference, 20, "nll", offset=math.nan)))
    # a whole block 10 % lower (much faster learning, or a broken loss) fails
    lower = [{**r, "loss": r["loss"] * (0.9 if 25 <= r["step"] <= 30 else 1.0)} for r in reference["curve"]]
    assert [p.split(":")[0] for p in problems(lower)] == ["mean of steps 25-30 loss"]
    # missing steps, a changed corpus and a changed config are reported as such
    assert "logged steps differ" in problems(reference["curve"][:-1])[0]
    other = copy.deepcopy(summary)
    other["synthetic"]["sum"] += 1.0
    assert "corpus itself changed" in problems(reference["curve"], summary=other)[0]
    changed = copy.deepcopy(run_config)
    changed["model"]["rope_base"] = 5000.0
    assert "model.rope_base (10000.0 -> 5000.0)" in problems(reference["curve"], run_config=changed)[0]
    # the failure message says how to regenerate the reference
    assert WRITE_COMMAND in failure_message(["x"], reference)
