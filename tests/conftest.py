"""Test environment: set before anything imports triton, deepspeed, wandb or huggingface_hub."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """GPU tests skip with their reason where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
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
