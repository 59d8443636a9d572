"""The checkpoint-layout check: a resume with another world size or parallel.ep_size is refused from rank 0's
trainer state, and the trainer makes that check while setting up the run folder, before any collective."""
from __future__ import annotations

import json
import types

import pytest
import torch

from moe_ts.typed_config import from_dict, save_file
from pretrain.checkpoint import check_checkpoint_layout, checkpoint_root, trainer_state_name
from pretrain.config import PretrainConfig
from pretrain.errors import CheckpointError

MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 32, "num_layers": 1, "num_heads": 2,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}


def saved_run(tmp_path, world_size: int, ep_size: int):
    """A run folder whose newest checkpoint says it was saved by `world_size` ranks with `ep_size`."""
    run = from_dict(PretrainConfig, {"model": MODEL, "parallel": {"ep_size": ep_size}})
    out = tmp_path / "run"
    step = checkpoint_root(out) / "step-3"
    step.mkdir(parents=True)
    (step / trainer_state_name(0)).write_text(json.dumps({"step": 3, "world_size": world_size, "ep_size": ep_size}))
    save_file(run, out / "config.yaml")
    return run, out, step


@pytest.mark.parametrize("world,ep", [(4, 2), (2, 1), (4, 4)])
def test_another_world_size_or_ep_size_is_refused(tmp_path, world, ep):
    _, _, step = saved_run(tmp_path, world_size=2, ep_size=2)
    check_checkpoint_layout(step, world_size=2, ep_size=2)
    with pytest.raises(CheckpointError, match=f"saved with world size 2 and parallel.ep_size 2, resumed with world "
                                              f"size {world} and parallel.ep_size {ep}"):
        check_checkpoint_layout(step, world_size=world, ep_size=ep)


def test_the_trainer_checks_the_layout_when_it_sets_up_the_run_folder(tmp_path):
    from pretrain import trainer

    run, out, _ = saved_run(tmp_path, world_size=2, ep_size=2)
    four = types.SimpleNamespace(rank=0, world_size=4, local_rank=0, device=torch.device("cpu"), is_main=True)
    with pytest.raises(CheckpointError, match="resumed with world size 4"):  # 2 -> 4 ranks, ep_size 2 divides both
        trainer._check_run_folder(run, out, four, resume=True)
    two = types.SimpleNamespace(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), is_main=True)
    trainer._check_run_folder(run, out, two, resume=True)  # the saved layout passes
