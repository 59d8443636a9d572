"""Hugging Face folder I/O: config.json + model.safetensors + README.md, strict and atomic.

Built on huggingface_hub's ModelHubMixin (which gives save_pretrained / from_pretrained /
push_to_hub); this mixin overrides its two framework hooks so that weights are written
atomically and a mismatched, missing or truncated checkpoint fails with a message saying what
is wrong instead of loading half a model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from huggingface_hub import constants, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from moe_ts.io.output_dir import MARKER, check_output_dir, make_staging_dir, swap_in
from moe_ts.typed_config import dataclass_coders

WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # "model.safetensors"
CONFIG_NAME = constants.CONFIG_NAME  # "config.json"
REPO_URL = "https://github.com/moe-ts/moe-ts"


class ModelFolderError(RuntimeError):
    """A checkpoint folder is missing, corrupt or does not match its config."""


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_local_folder(folder: Path) -> None:
    """Fail early, naming the file, when a local checkpoint folder cannot be loaded."""
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: checkpoint folder not found")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ModelFolderError(f"{config_path}: missing (a checkpoint folder needs config.json and {WEIGHTS_NAME})")
    try:
        json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{config_path}: not valid JSON ({err})") from err
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelFolderError(f"{folder / WEIGHTS_NAME}: missing weights file")


def load_state_strict(model: torch.nn.Module, weights_path: Path | str, map_location: str = "cpu") -> None:
    """Load safetensors weights requiring exactly the model's keys and shapes."""
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFolderError(f"{weights_path}: truncated or corrupt safetensors file ({err})") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            parts.append(f"shape mismatch {len(wrong_shape)} (e.g. {'; '.join(wrong_shape[:3])})")
        raise ModelFolderError(f"{weights_path}: weights do not match config.json: " + ", ".join(parts))
    for name in sorted(state):  # a NaN weight would only surface later, as e.g. "invalid Poisson rate"
        tensor = state[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelFolderError(f"{weights_path}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf)")
    model.load_state_dict(state, strict=True)


def released_class_keywords(
    config_class: type, *family_tags: str, migrate: Callable[[dict], dict] | None = None,
    repo_url: str | None = REPO_URL, **card: Any,
) -> dict[str, Any]:
    """`ModelHubMixin`'s class keywords of a released family: `class M(..., HubIOMixin, ModelHubMixin, **these)`.

    moe-ts' library name, pipeline tag and licence ("other": `moe-ts export --license` sets a release's), the
    family's tags after "time-series" and "forecasting", the coders of its config dataclass
    (`moe_ts.typed_config.dataclass_coders`, `migrate` updating what older code wrote) and any card option such as
    `model_card_template`.
    """
    return {"library_name": "moe-ts", "tags": ["time-series", "forecasting", *family_tags], "repo_url": repo_url,
            "pipeline_tag": "time-series-forecasting", "license": "other",
            "coders": {config_class: dataclass_coders(config_class, migrate)}, **card}


class HubIOMixin:
    """Overrides ModelHubMixin's framework hooks; put it before ModelHubMixin in the bases."""

    _decode_config: Callable[[dict], Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if kwargs.get("coders"):  # `released_class_keywords`: one config dataclass per released class
            (_, cls._decode_config), = kwargs["coders"].values()
        super().__init_subclass__(**kwargs)

    @classmethod
    def typed_config(cls, config: Any) -> Any:
        """`config` as the class's config dataclass: a dict (config.json's content) is decoded by its coders."""
        return cls._decode_config(config) if isinstance(config, dict) else config

    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        overwrite: bool = False, **kwargs: Any):  # type: ignore[override]
        """Write config.json, model.safetensors and README.md into a temp folder, then swap it in.

        A crash mid-write leaves the previous folder (if any) untouched. An existing folder is replaced only
        when moe-ts wrote it (see `moe_ts.io.output_dir`) or `overwrite=True`; a path that is a file is an error.
        """
        target = Path(save_directory)
        check_output_dir(target, overwrite, remedy="pass overwrite=True to replace it")
        tmp = make_staging_dir(target)
        try:
            super().save_pretrained(tmp, **kwargs)  # type: ignore[misc]
            swap_in(tmp, target, "model")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        if push_to_hub:
            return self.push_to_hub(repo_id=repo_id or target.name, **kwargs)  # type: ignore[attr-defined]
        return None

    def push_to_hub(self, repo_id: str, **kwargs: Any):  # type: ignore[override]
        """ModelHubMixin.push_to_hub without our local marker file (`moe_ts.io.output_dir.MARKER`)."""
        ignore = kwargs.pop("ignore_patterns", None) or []
        ignore = [ignore] if isinstance(ignore, str) else list(ignore)
        return super().push_to_hub(repo_id, ignore_patterns=[*ignore, MARKER], **kwargs)  # type: ignore[misc]

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        _atomic_save_safetensors(state, Path(save_directory) / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):  # type: ignore[override]
        """Load a local folder or a Hub repo id (needs network unless cached); strict about keys and shapes."""
        path = Path(pretrained_model_name_or_path)
        if path.exists() or str(pretrained_model_name_or_path).startswith((".", "/")):
            check_local_folder(path)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)  # type: ignore[misc]
        except (TypeError, ValueError) as err:
            if isinstance(err, ModelFolderError):
                raise
            raise ModelFolderError(f"{pretrained_model_name_or_path}: config.json does not describe this model ({err})") from err

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ):
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
        else:
            weights = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        load_state_strict(model, weights, map_location)  # type: ignore[arg-type]
        model.eval()  # type: ignore[attr-defined]
        return model
