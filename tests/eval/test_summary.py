"""eval.summary: the demo's side-by-side print-out reads the numbers the eval wrote."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from eval.run import main as run_main
from eval.summary import main

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")


def test_summary_prints_every_role_and_the_subsampling(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    (d / "expsmooth").symlink_to(DATA / "expsmooth")
    out = tmp_path / "out"
    assert run_main(["--checkpoint", "naive", "--suite", "monash", "--datasets", "hospital,car_parts", "--data-dir", str(d),
                     "--max-series", "4", "--baselines", "snaive,autotheta", "--plot-series", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([str(out)]) == 0
    text = capsys.readouterr().out
    with open(out / "results.csv") as fh:
        mae = {(r["dataset"], r["role"]): float(r["value"]) for r in csv.DictReader(fh) if r["metric"] == "MAE"}
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.split()}
    assert lines["hospital*"][1:] == [f"{mae[('hospital', role)]:.4g}" for role in ("model", "seasonal_naive", "autotheta")]
    assert "car_parts*" in lines
    assert "SUBSAMPLED: 4 of" in text and "AutoTheta" in text


def test_summary_names_a_folder_without_results(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no results.csv" in capsys.readouterr().err
