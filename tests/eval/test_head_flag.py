"""`moe-ts eval --head next|horizon`: checked against the model before a forecast runs, and recorded."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from eval.run import main
from eval.runner import MODEL

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")


@pytest.fixture()
def common(tmp_path: Path) -> list[str]:
    d = tmp_path / "data"
    d.mkdir()
    (d / "expsmooth").symlink_to(DATA / "expsmooth")
    return ["--suite", "monash", "--datasets", "hospital", "--data-dir", str(d), "--max-series", "2",
            "--num-samples", "4", "--plot-series", "0"]


def test_head_flag_is_checked_and_recorded(tmp_path, common, capsys, make_checkpoint):
    plain = make_checkpoint(tmp_path / "plain", seed=0)
    long = make_checkpoint(tmp_path / "long", seed=0, horizon_patches=2)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(plain), *common, "--head", "horizon", "--out", str(tmp_path / "o1")])
    assert "--head horizon: the model has no long-horizon head" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", *common, "--head", "next", "--out", str(tmp_path / "o2")])
    assert "--head applies to a MoE model checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(long), *common, "--head", "horizon", "--patches-per-step", "3",
              "--out", str(tmp_path / "o3")])
    assert "with its horizon head (allowed 1..2)" in capsys.readouterr().err
    main(["--checkpoint", str(long), *common, "--head", "horizon", "--out", str(tmp_path / "o4")])
    with open(tmp_path / "o4" / "results.csv") as fh:
        assert any(r["role"] == MODEL for r in csv.DictReader(fh))
    assert "head horizon" in (tmp_path / "o4" / "results.md").read_text()
