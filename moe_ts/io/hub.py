"""Hugging Face folder I/O: config.json + model.safetensors + README.md, strict and atomic.

Built on huggingface_hub's ModelHubMixin (which gives save_pretrained / from_pretrained /
push_to_hub); this mixin overrides its two framework hooks so that weights are written
atomically and a mismatched, missing or truncated checkpoint fails with a message saying what
is wrong instead of loading half a model. `model.safetensors` gets its SHA-256 in `checksums.json` at save, checked
at every load (folders written before load unchecked). A name that can be a local path is never tried on the Hub
(`looks_like_hub_id`), and a folder of another model type is named as such. Every family's card comes from
`moe_ts.io.model_card.render_card`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from huggingface_hub import constants, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from moe_ts.io.output_dir import MARKER, check_output_dir, make_staging_dir, swap_in
from moe_ts.io.model_card import render_card
from moe_ts.typed_config import dataclass_coders

WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # "model.safetensors"
CONFIG_NAME = constants.CONFIG_NAME  # "config.json"
CHECKSUM_NAME = "checksums.json"  # {"sha256": {"model.safetensors": hex}}, written at save, verified at load
REPO_URL = "https://github.com/moe-ts/moe-ts"
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
MOE_MODEL_TYPE = "moirai_moe"  # what a config.json without `model_type` is
FOLDER_TYPES = {MOE_MODEL_TYPE: "a Moirai-MoE model folder",
                "timedistill_mlp": "a distilled MLP student folder (moe-ts distill)",
                "msft": "an MSFT-finetuned model folder (moe-ts finetune --method msft)"}


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the weights file's SHA-256 beside it (verified by `verify_checksum` at every load)."""
    record = {"sha256": {WEIGHTS_NAME: file_sha256(folder / WEIGHTS_NAME)}}
    (folder / CHECKSUM_NAME).write_text(json.dumps(record, indent=1) + "\n")


def verify_checksum(weights_path: Path) -> None:
    """ModelFolderError naming the file when the weights differ from the checksum recorded at save; folders
    written before checksums were recorded (no checksums.json) load unchecked."""
    record_path = weights_path.parent / CHECKSUM_NAME
    if not record_path.is_file():
        return
    try:
        recorded = json.loads(record_path.read_text())["sha256"][weights_path.name]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ModelFolderError(f"{record_path}: unreadable checksum record ({type(err).__name__}: {err})") from None
    actual = file_sha256(weights_path)
    if actual != recorded:
        raise ModelFolderError(f"{weights_path}: damaged: its SHA-256 {actual[:12]}... differs from the one recorded at "
                               f"save in {CHECKSUM_NAME} ({str(recorded)[:12]}...); copy the folder again from its source")


def looks_like_hub_id(name: str | Path) -> bool:
    """True when `name` can only be a Hub repo id (`owner/name`): no such local path, not path-like (./, /, ~,
    a trailing slash, more than one separator) and its first part is not an existing local folder."""
    text = str(name)
    if Path(text).exists() or not HUB_REPO_ID.match(text) or ".." in text.split("/"):
        return False
    return not Path(text.split("/")[0]).is_dir()


def local_folder_type(folder: Path) -> str:
    """The model type a local folder's config.json names (default the MoE model); a uni2ts checkpoint says so."""
    try:
        data = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return MOE_MODEL_TYPE  # check_local_folder reports it
    if not isinstance(data, dict):
        raise ModelFolderError(f"{folder / CONFIG_NAME}: expected a JSON object, got {type(data).__name__}")
    if "model_type" not in data and ("distr_output" in data or "patch_sizes" in data):
        raise ModelFolderError(f"{folder}: is an unconverted uni2ts checkpoint folder; convert it first: "
                               f"`moe-ts convert --from uni2ts {folder} --out DIR`")
    return str(data.get("model_type", MOE_MODEL_TYPE))


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
    """Load safetensors weights requiring exactly the model's keys and shapes (and its recorded checksum)."""
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFolderError(f"{weights_path}: truncated or corrupt safetensors file ({err})") from err
    verify_checksum(Path(weights_path))
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
            ((config_class, (_, cls._decode_config)),) = kwargs["coders"].items()
            cls._folder_model_type = str(getattr(config_class, "model_type", MOE_MODEL_TYPE))
        super().__init_subclass__(**kwargs)

    @classmethod
    def typed_config(cls, config: Any) -> Any:
        """`config` as the class's config dataclass: a dict (config.json's content) is decoded by its coders."""
        return cls._decode_config(config) if isinstance(config, dict) else config

    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        overwrite: bool = False, folder_kind: str = "model",
                        inputs: Mapping[str, Any] | None = None, extra_files: Mapping[str, str] | None = None,
                        remedy: str = "pass overwrite=True to replace it", **kwargs: Any):  # type: ignore[override]
        """Write config.json, model.safetensors (+ checksums.json), README.md and `extra_files` ({name: text})
        into a temp folder, then swap it in marked as `folder_kind`.

        A crash mid-write leaves the previous folder (if any) untouched. An existing folder is replaced only
        when it is a moe-ts folder of `folder_kind` or `overwrite=True`, never when it is (or holds) one of
        `inputs` ({flag: path}); a path that is a file is an error (see `moe_ts.io.output_dir`).
        """
        target = Path(save_directory)
        check_output_dir(target, overwrite, remedy=remedy, kind=folder_kind, inputs=inputs)
        tmp = make_staging_dir(target)
        try:
            super().save_pretrained(tmp, **kwargs)  # type: ignore[misc]
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            swap_in(tmp, target, folder_kind)
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
        write_checksums(Path(save_directory))

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """Our card template (`moe_ts.io.model_card`), never huggingface_hub's stub, filled with `kwargs`."""
        info = self._hub_mixin_info  # type: ignore[attr-defined]
        return render_card(self, info.model_card_template, info.model_card_data, info.repo_url, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):  # type: ignore[override]
        """Load a local folder or a Hub repo id (needs network unless cached); strict about keys and shapes.

        A name that can be a local path (`looks_like_hub_id` is false) is never tried on the Hub: a missing one
        is one line at once. A folder of another model type (a student, an MSFT model, a raw uni2ts checkpoint)
        is named as such."""
        name = str(pretrained_model_name_or_path)
        hub = looks_like_hub_id(name)
        if not hub:
            path = Path(name).expanduser()
            check_local_folder(path)
            found, wanted = local_folder_type(path), getattr(cls, "_folder_model_type", MOE_MODEL_TYPE)
            if found != wanted:
                raise ModelFolderError(
                    f"{path}: is {FOLDER_TYPES.get(found, f'a folder of model_type {found!r}')}, not "
                    f"{FOLDER_TYPES.get(wanted, wanted)} ({cls.__name__}); load any model folder with "
                    "moe_ts.io.loading.load_model")
            pretrained_model_name_or_path = path
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)  # type: ignore[misc]
        except ModelFolderError:
            raise
        except (TypeError, ValueError) as err:
            raise ModelFolderError(f"{pretrained_model_name_or_path}: config.json does not describe this model ({err})") from err
        except Exception as err:  # noqa: BLE001 - only a Hub id gets here: offline, unknown repo, no access
            if not hub:
                raise
            first = str(err).splitlines()[0] if str(err) else ""
            raise ModelFolderError(f"{name}: no such local folder, and as a Hub repo id it failed to download "
                                   f"({type(err).__name__}: {first})") from err

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
