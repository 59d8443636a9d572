"""Test environment (set before anything imports triton, deepspeed, wandb or huggingface_hub), the `gpu` marker's
skip, and the fixtures tests share: tiny models and checkpoints, small corpora, a free loopback port."""
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The download cache (data_prep.download): a fresh empty folder, so files a developer downloaded into
# ~/.cache/moe-ts never make a "missing dataset" test pass or fail.
os.environ["MOE_TS_CACHE"] = tempfile.mkdtemp(prefix="moe-ts-test-cache-")
os.environ.pop("MOE_TS_CHECKSUM_LOCK", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip with their reason where no CUDA device is present. The marker is looked up
    itself: `"gpu" in item.keywords` also matched any test whose parametrize id or name holds "gpu"."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture
def input_blind():
    """Factory: `input_blind(model)` is a forward that ignores its input, returning the model's output on
    zeroed patches (computed once) for every call; a loss through it can depend only on the targets."""
    def make(model):
        fixed = {}

        def forward(x, positions, mask, caches=None, token_mask_bn=None):
            if "out" not in fixed:
                fixed["out"] = model(torch.zeros_like(x), positions, mask, caches, token_mask_bn)
            return fixed["out"]
        return forward
    return make


# --- shared builders ----------------------------------------------------------------------------------------
# A tiny MoE model (8-point patches, 16 positions = 128-point contexts, d_model 16, one layer, 3 experts top-1):
# a forward, a save/load or a CLI run on it takes milliseconds. Tests that depend on other sizes pass them to
# the factories.

TINY_MODEL = dict(patch_size=8, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
TINY_MOE = dict(num_experts=3, top_k=1, d_ff=8)


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: `tiny_config(**overrides)` is the tiny `ModelConfig` with `overrides` applied; `moe` may be a
    dict (merged over the tiny MoE sizes) or a `MoEConfig`."""
    from moe_ts.config import ModelConfig, MoEConfig

    def make(**overrides) -> ModelConfig:
        moe = overrides.pop("moe", {})
        if isinstance(moe, dict):
            moe = MoEConfig(**{**TINY_MOE, **moe})
        return ModelConfig(**{**TINY_MODEL, **overrides}, moe=moe)
    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """Factory: `tiny_model(seed=0, config=None, **overrides)` seeds torch's global RNG with `seed` (unless
    None), then builds a `MoiraiMoEModel` of `config` (default: `tiny_config(**overrides)`), in train mode as
    constructed."""
    from moe_ts.model import MoiraiMoEModel

    def make(seed: int | None = 0, config=None, **overrides):
        if seed is not None:
            torch.manual_seed(seed)
        return MoiraiMoEModel(config if config is not None else tiny_config(**overrides))
    return make


@pytest.fixture(scope="session")
def make_checkpoint(tiny_model):
    """Factory: `make_checkpoint(path, seed=0, config=None, **overrides)` saves `tiny_model(...)` with
    `save_pretrained(path)` and returns `path`."""
    def make(path, seed: int | None = 0, config=None, **overrides):
        tiny_model(seed, config, **overrides).eval().save_pretrained(path)
        return path
    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, make_checkpoint):
    """A checkpoint folder of the tiny model (seed 0), shared by the session: read it, never write into it
    (`writable_checkpoint` is a private copy)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "ck")


@pytest.fixture()
def writable_checkpoint(tiny_checkpoint, tmp_path):
    """A copy of `tiny_checkpoint` at `tmp_path / "ck"`, for tests that damage or overwrite its files."""
    import shutil

    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ck"))


# The columns training reads (a `moe-ts prepare` corpus has these and its provenance columns, data_prep.corpus.SCHEMA).
CORPUS_COLUMNS = ("item_id", "dataset", "freq", "start", "target", "group_id")


@pytest.fixture(scope="session")
def write_arrow_corpus():
    """Factory: `write_arrow_corpus(path, rows, manifest=True)` writes a corpus training reads (`open_corpus`:
    the Arrow dataset with the training columns only; the leak check's reader wants `moe-ts prepare`'s provenance
    columns too) from `rows`, dicts with `item_id`, `dataset`, `target` (a float32 array, NaN for
    missing) and optionally `freq` ("h"), `start` (2022-01-01) and `group_id` (the item id); with `manifest`
    it ends as `moe-ts prepare` does, with `manifest.json` saying `{"complete": true}`. Returns `path`."""
    def write(path, rows, manifest: bool = True):
        import datasets
        import pandas as pd

        defaults = {"freq": "h", "start": pd.Timestamp("2022-01-01")}
        cols = {k: [] for k in CORPUS_COLUMNS}
        for row in rows:
            row = {**defaults, "group_id": row["item_id"], **row}
            for key in CORPUS_COLUMNS:
                value = row[key]
                cols[key].append(value.tolist() if key == "target" and hasattr(value, "tolist") else value)
        datasets.Dataset.from_dict(cols).save_to_disk(str(path))
        if manifest:
            (Path(path) / "manifest.json").write_text(json.dumps({"complete": True}))
        return Path(path)
    return write


def sines_and_walks(seed: int = 0, sines=(12, 10, 120), walks=(6, 40, 400), nan_rate: float = 0.05):
    """Rows of a small mixed corpus: `sines` = (count, min length, max length) noise-free sines of random period
    and amplitude, `walks` likewise Gaussian random walks; a `nan_rate` share of points missing."""
    rng = np.random.default_rng(seed)
    for name, (n, lo, hi) in (("sines", sines), ("walks", walks)):
        for i in range(n):
            length = int(rng.integers(lo, hi))
            t = np.arange(length)
            if name == "sines":
                y = np.sin(t / rng.uniform(2, 8)) * rng.uniform(1, 5)
            else:
                y = np.cumsum(rng.normal(size=length))
            y = y.astype(np.float32)
            y[rng.random(length) < nan_rate] = np.nan
            yield {"item_id": f"{name}-{i}", "dataset": name, "target": y}


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, write_arrow_corpus):
    """A small complete corpus shared by the session (read it, never write into it): 12 sines of 10-120 points
    and 6 random walks of 40-400, 5 % of the points missing, with a complete manifest (what training needs of `moe-ts prepare`'s output)."""
    return write_arrow_corpus(tmp_path_factory.mktemp("small_corpus") / "corpus", sines_and_walks(0))


@pytest.fixture(scope="session")
def free_port():
    """Factory: `free_port()` is a TCP port on 127.0.0.1 that was free a moment ago (for a torchrun / gloo
    rendezvous)."""
    import socket

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    return pick
