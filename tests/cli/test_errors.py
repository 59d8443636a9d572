"""Every `moe-ts` subcommand reports a missing file as one line on stderr with a non-zero exit; `eval --list`."""
from __future__ import annotations

import pytest

from cli.main import main


@pytest.mark.parametrize("command", [
    ["prepare", "--out", "{tmp}/corpus", "--data-dir", "{tmp}/no-data"],
    ["check", "--corpus", "{tmp}/no-corpus"],
    ["pretrain", "--config", "{tmp}/no.yaml", "--data", "{tmp}/no-corpus", "--out", "{tmp}/run"],
    ["eval", "--checkpoint", "{tmp}/no-model", "--suite", "monash", "--out", "{tmp}/eval"],
    ["eval", "--checkpoint", "naive", "--tsf", "{tmp}/no.tsf", "--out", "{tmp}/eval"],
    ["forecast", "--checkpoint", "{tmp}/no-model", "--input", "{tmp}/no.csv", "--horizon", "3", "--out", "{tmp}/f.csv"],
    ["export", "--checkpoint", "{tmp}/no-model", "--out", "{tmp}/release"],
], ids=lambda c: c[0] + ("-tsf" if "--tsf" in c else ""))
def test_a_missing_file_is_one_line(command, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in command]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0
    assert len(err) == 1, err
    assert str(tmp_path / "no") in err[0] and "Traceback" not in err[0]


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="not found"):
        main(["--debug", "export", "--checkpoint", str(tmp_path / "no-model"), "--out", str(tmp_path / "r")])


def test_eval_of_a_requested_missing_dataset_fails(tmp_path, capsys):
    code = main(["eval", "--checkpoint", "naive", "--suite", "monash", "--datasets", "m4_hourly",
                 "--data-dir", str(tmp_path), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("moe-ts eval: error: nothing evaluated") and "m4_hourly" in err[-1]
    assert not (tmp_path / "eval").exists()


def test_eval_list_names_every_dataset_with_its_status_and_file(tmp_path, capsys):
    from data_prep.registry import all_specs

    (tmp_path / "m4").mkdir()
    (tmp_path / "m4" / "Hourly-train.csv").write_text("")
    (tmp_path / "m4" / "Hourly-test.csv").write_text("")
    assert main(["eval", "--list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert set(lines) == {s.name for s in all_specs()}
    m4 = lines["m4_hourly"]
    assert "available" in m4 and str(tmp_path / "m4") in m4 and "monash" in m4 and "48" in m4
    assert "missing" in lines["etth1"] and str(tmp_path / "ett" / "ETTh1.csv") in lines["etth1"]
