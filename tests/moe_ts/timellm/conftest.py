"""Fixtures of the Time-LLM tests: a tiny random Qwen2 folder (built once per session) and small model configs."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("timellm_tiny_llm", Path(__file__).with_name("tiny_llm.py"))
tiny_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_llm)


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
