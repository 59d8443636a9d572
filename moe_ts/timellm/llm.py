"""The frozen language model and its tokenizer, loaded with `transformers` by Hub name or local folder.

`load_llm` reads the config first (`AutoConfig`), so a folder that is not a causal or base decoder LM, a name
that cannot be found (offline: not in the Hugging Face cache) and a layer count past the model's are each one line
(`LLMError`) before any weight loads. The model is the architecture's base (`AutoModel`: hidden states, no LM head),
optionally cut to its first k layers, every parameter frozen, in eval mode (no dropout), in bfloat16 where CUDA
supports it and float32 elsewhere; a tokenizer that does not fit the embeddings (e.g. none in the folder) is one
line too. A Hub model's revision is the commit of the snapshot its config.json came from
(recorded in the saved folder so a later load gets the same weights); a local folder has none.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


PROBE_TEXT = "Dataset description: min value 0.5, the trend of input is upward"  # what a prompt holds


class LLMError(ValueError):
    """The --llm name or folder cannot serve as the frozen language model (reported in one line)."""


@dataclass
class LoadedLLM:
    """A frozen base model, its tokenizer and what identifies them."""

    model: nn.Module
    tokenizer: Any
    name: str  # a Hub id as given, or a local folder's absolute path
    revision: str | None  # the Hub commit, None for a local folder
    num_layers: int  # layers kept
    hidden_size: int
    vocab_size: int  # rows of the input embedding table


def _hide_shadowed_hub_kernels() -> None:
    """transformers imports the `kernels` distribution (Hugging Face's hub kernels, an optional dependency) when it
    is installed; this project's own top-level `kernels` package has the same import name and shadows it, so that
    import would fail. Where the shadow exists, transformers is told the distribution is absent (its torch paths,
    the ones it uses by default anyway). Must run before transformers' modeling code is imported."""
    import transformers.utils as utils
    import transformers.utils.import_utils as import_utils

    spec = importlib.util.find_spec("kernels")
    try:
        installed = str(importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py"))
    except importlib.metadata.PackageNotFoundError:
        return
    if spec is not None and spec.origin != installed:
        import_utils.is_kernels_available = utils.is_kernels_available = lambda *args, **kwargs: False


def import_transformers():
    """The transformers module, hub-kernel shadowing handled (`_hide_shadowed_hub_kernels`): import it through
    this before any transformers model class."""
    _hide_shadowed_hub_kernels()
    import transformers

    return transformers


def default_llm_dtype(device: torch.device | None = None) -> torch.dtype:
    """bfloat16 where the CUDA device (`device`, default any) supports it, else float32 (a CPU run: float32)."""
    cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load reports (e.g. the weights of the layers cut off) kept off the console."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _config(name: str, revision: str | None) -> Any:
    AutoConfig = import_transformers().AutoConfig

    local = Path(name).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise LLMError(f"--llm {name}: the folder has no config.json: not a transformers model folder")
    try:
        return AutoConfig.from_pretrained(str(local) if local.is_dir() else name, revision=revision)
    except OSError as err:
        if local.exists():
            raise LLMError(f"--llm {name}: cannot read it as a transformers model ({str(err).splitlines()[0]})") from None
        where = ("the Hub is not contacted (HF_HUB_OFFLINE=1)" if _offline()
                 else f"the Hub did not serve it ({str(err).splitlines()[0]})")
        raise LLMError(f"--llm {name}: no such local folder and not in the Hugging Face cache; {where}: "
                       "download it once online or pass a local folder") from None
    except ValueError as err:  # a config.json without a model_type transformers knows
        raise LLMError(f"--llm {name}: not a transformers language model ({str(err).splitlines()[0]})") from None


def check_decoder(name: str, config: Any) -> None:
    """LLMError unless `config` is a causal (decoder-only) language model's."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise LLMError(f"--llm {name}: model_type {kind!r} is not a causal or base decoder language model "
                       "(Time-LLM needs one, e.g. Qwen/Qwen2.5-0.5B, gpt2, deepseek-ai/DeepSeek-R1-Distill-Qwen-7B)")


def check_tokenizer(name: str, tokenizer: Any, vocab_size: int) -> None:
    """LLMError unless the tokenizer turns a prompt into tokens the embedding table has (transformers builds an
    empty tokenizer, silently, for a folder without tokenizer files: every prompt would vanish)."""
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    if len(ids) < 2 or max(ids) >= vocab_size:
        found = f"{len(ids)} tokens" if len(ids) < 2 else f"token id {max(ids)} past the {vocab_size} embeddings"
        raise LLMError(f"--llm {name}: its tokenizer does not fit the model ({found} for {PROBE_TEXT!r}); the folder "
                       "needs the model's own tokenizer files")


def _hub_commit(name: str, revision: str | None) -> str | None:
    """The commit a Hub id's config.json was taken from (its snapshot folder in the cache), else `revision`."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(name, "config.json", revision=revision))
    except Exception:  # noqa: BLE001 - the config already loaded; the commit is only recorded
        return revision
    return path.parent.name if path.parent.parent.name == "snapshots" else revision


def _keep_layers(name: str, config: Any, layers: int) -> int:
    total = int(config.num_hidden_layers)
    if layers < 0 or layers > total:
        raise LLMError(f"--llm-layers {layers}: {name} has {total} layers (0 keeps them all)")
    if 0 < layers < total:
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):  # per-layer attention kinds (Qwen2 and others) must match
            config.layer_types = list(config.layer_types)[:layers]
    return int(config.num_hidden_layers)


def load_llm(name: str, revision: str | None = None, layers: int = 0, dtype: torch.dtype | None = None) -> LoadedLLM:
    """The frozen base model and tokenizer of `name` (Hub id or folder), cut to `layers` (0 = all)."""
    transformers = import_transformers()
    AutoModel, AutoTokenizer = transformers.AutoModel, transformers.AutoTokenizer

    config = _config(name, revision)
    check_decoder(name, config)
    kept = _keep_layers(name, config, layers)
    local = Path(name).expanduser()
    source = str(local.resolve()) if local.is_dir() else name
    revision = None if local.is_dir() else (getattr(config, "_commit_hash", None) or _hub_commit(name, revision))
    dtype = dtype or default_llm_dtype()
    with _quiet_transformers():
        try:
            model = AutoModel.from_pretrained(source, config=config, revision=revision, dtype=dtype,
                                              use_kernels=False)  # torch paths; no hub kernels fetched
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as err:
            raise LLMError(f"--llm {name}: cannot load its weights or tokenizer ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token is None:  # only padded positions, masked out, ever hold it
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "left"  # prompts end where the patches begin
    model.requires_grad_(False)
    model.eval()
    embeddings = model.get_input_embeddings().weight
    check_tokenizer(name, tokenizer, int(embeddings.shape[0]))
    return LoadedLLM(model=model, tokenizer=tokenizer, name=source, revision=revision, num_layers=kept,
                     hidden_size=int(embeddings.shape[1]), vocab_size=int(embeddings.shape[0]))
