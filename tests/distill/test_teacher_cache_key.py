"""The teacher cache's key holds how the teacher decodes (issue 25): a run with other teacher samples, decoding,
seed or point forecast never reads the cached outputs of another setting. Each case first shows the two settings
give different teacher forecasts (so a stale read would be wrong), then that the second run misses the cache
and gets exactly the teacher's own forecast under its settings."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distill.teacher_cache import TeacherSettings, cached_teacher_outputs

BASE = TeacherSettings(num_samples=4, point="mean", decode="sample", seed=0, batch_size=4)
CHANGES = {"num_samples": 9, "decode": "median", "seed": 1, "point": "median"}
HORIZON = 16


@pytest.fixture(scope="module")
def teacher(tiny_model):
    return tiny_model(seed=0, max_seq_len=8).eval()


@pytest.fixture(scope="module")
def contexts_nl() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(32)
    x = rng.uniform(-5, 5, (6, 1)) + np.sin(2 * np.pi * t / 12 + rng.uniform(0, 6, (6, 1)))
    return (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)


def direct(teacher, contexts_nl: np.ndarray, settings: TeacherSettings) -> np.ndarray:
    """The teacher's point forecast under `settings`, straight from `forecast()` (one batch: seed + 0)."""
    out = teacher.forecast(list(contexts_nl), HORIZON, num_samples=settings.num_samples, seed=settings.seed,
                           batch_size=settings.batch_size, context_length=contexts_nl.shape[1],
                           decode=settings.decode)
    return out.mean if settings.point == "mean" else out.median


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_other_decoding_settings_never_read_the_cache(field, teacher, contexts_nl, tmp_path):
    other = dataclasses.replace(BASE, **{field: CHANGES[field]})
    ctx = contexts_nl[:4]  # one teacher batch
    assert not np.allclose(direct(teacher, ctx, BASE), direct(teacher, ctx, other))
    first, _, hit = cached_teacher_outputs(teacher, ctx, HORIZON, BASE, tmp_path, progress=False)
    assert not hit
    np.testing.assert_allclose(first, direct(teacher, ctx, BASE), rtol=1e-6, atol=1e-6)
    second, _, hit = cached_teacher_outputs(teacher, ctx, HORIZON, other, tmp_path, progress=False)
    assert not hit, f"{field} changed but the cache of the old setting was read"
    np.testing.assert_allclose(second, direct(teacher, ctx, other), rtol=1e-6, atol=1e-6)
    again, _, hit = cached_teacher_outputs(teacher, ctx, HORIZON, BASE, tmp_path, progress=False)
    assert hit and np.array_equal(again, first)  # both settings are kept side by side
