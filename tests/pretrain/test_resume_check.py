"""`--resume` config check (pretrain/resume_check.py): a run saved by the trainer resumes under its own config,
mappings such as `train.mixture_share` included; any change in what it computes is named."""
from pathlib import Path

import pytest

from moe_ts.typed_config import save_file
from pretrain.errors import CheckpointError
from pretrain.config import load_pretrain_config
from pretrain.resume_check import check_resume_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_resumes_under_itself(path, tmp_path):
    run = load_pretrain_config(path)
    save_file(run, tmp_path / "config.yaml")  # what the trainer writes into RUN/
    check_resume_config(run, tmp_path)


def test_mixture_share_changes_are_named_and_pacing_keys_may_differ(tmp_path):
    run = load_pretrain_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    assert run.train.mixture_share  # the shipped recipe holds a non-empty mapping
    save_file(run, tmp_path / "config.yaml")
    run.train.time_budget_s, run.train.num_threads = 10.0, 2  # pacing: may differ
    check_resume_config(run, tmp_path)
    run.train.mixture_share = {**run.train.mixture_share, "periodic": 0.5}
    with pytest.raises(CheckpointError, match=r"train\.mixture_share\.periodic: saved 0\.15, requested 0\.5"):
        check_resume_config(run, tmp_path)
    run.train.mixture_share = {}
    with pytest.raises(CheckpointError, match=r"train\.mixture_share"):
        check_resume_config(run, tmp_path)
