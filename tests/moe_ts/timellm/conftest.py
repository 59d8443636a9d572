"""Fixtures of the Time-LLM tests: a tiny random Qwen2 folder (built once per session) and small model configs."""
from pathlib import Path

import pytest

from tests.moe_ts.timellm import tiny_llm


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return tiny_llm.build_tiny_llm(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return tiny_llm.build_tiny_llm(tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2")


@pytest.fixture
def small_config(tiny_llm_dir):
    """Factory: a small TimeLLMConfig over the tiny LLM (context 48 → 6 patches, heads 8 and 16)."""
    from moe_ts.timellm.config import TimeLLMConfig

    def make(**kw):
        base = dict(llm=str(tiny_llm_dir), context_length=48, horizons=(8, 16), d_model=8, d_ff=16, num_heads=2,
                    num_prototypes=12, dropout=0.0)
        return TimeLLMConfig(**{**base, **kw})
    return make
