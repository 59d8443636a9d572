"""Folders by kind (issue 25): no command replaces another command's folder or its own input; `--overwrite`
replaces whatever is there, for every command; a kill -9's staging leftovers are cleaned by the next write."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cli.main import main
from moe_ts.io.output_dir import MARKER, OutputDirError

REPO = Path(__file__).resolve().parents[2]
UNI2TS = REPO / "tests" / "data" / "uni2ts_moe_tiny"
TSF = ("@relation t\n@attribute series_name string\n@frequency yearly\n@horizon 2\n@missing false\n"
       "@equallength true\n@data\n" + "".join(f"S{i}:" + ",".join(str(float((j * (i + 1)) % 7)) for j in range(24))
                                            + "\n" for i in range(2)))


def folder_kind(path: Path) -> str | None:
    """The first line of the folder's marker (what kind of folder moe-ts wrote)."""
    marker = path / MARKER
    return marker.read_text().splitlines()[0] if marker.is_file() else None


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def eval_folder(ckpt: Path, out: Path, tmp_path: Path, *extra: str) -> Path:
    tsf = tmp_path / "in.tsf"
    tsf.write_text(TSF)
    assert main(["eval", "--checkpoint", str(ckpt), "--tsf", str(tsf), "--out", str(out), "--num-samples", "4",
                 "--plot-series", "0", *extra]) == 0
    return out


def test_distill_refuses_its_own_teacher_as_out(writable_checkpoint, capsys):
    before = (writable_checkpoint / "model.safetensors").read_bytes()
    code = main(["distill", "--teacher", str(writable_checkpoint), "--dataset", "etth1", "--context", "32",
                 "--horizon", "8", "--out", str(writable_checkpoint), "--overwrite"])
    assert code != 0 and "is the --teacher folder" in one_line_error(capsys)
    assert (writable_checkpoint / "model.safetensors").read_bytes() == before


def test_convert_into_an_evaluation_refuses_and_keeps_it(tiny_checkpoint, tmp_path, capsys):
    results = eval_folder(tiny_checkpoint, tmp_path / "eval", tmp_path)
    capsys.readouterr()
    assert main(["convert", "--from", "uni2ts", str(UNI2TS), "--out", str(results)]) != 0
    assert "is an evaluation (moe-ts eval), not a converted model" in one_line_error(capsys)
    assert (results / "results.md").is_file() and folder_kind(results) == "eval"
    assert main(["convert", "--from", "uni2ts", str(UNI2TS), "--out", str(results), "--overwrite"]) == 0
    assert folder_kind(results) == "converted" and not (results / "results.md").exists()


def test_export_and_eval_refuse_each_others_folders(tiny_checkpoint, tmp_path, capsys):
    release = tmp_path / "release"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(release)]) == 0
    assert folder_kind(release) == "release"
    capsys.readouterr()
    tsf = tmp_path / "in.tsf"
    tsf.write_text(TSF)
    assert main(["eval", "--checkpoint", "naive", "--tsf", str(tsf), "--out", str(release)]) != 0
    assert "is a release folder (moe-ts export), not an evaluation" in one_line_error(capsys)
    assert (release / "model.safetensors").is_file()
    results = eval_folder(tiny_checkpoint, tmp_path / "eval", tmp_path)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(results)]) != 0
    assert "is an evaluation (moe-ts eval), not a release folder" in one_line_error(capsys)
    assert (results / "results.csv").is_file()


def test_export_refuses_its_checkpoint_and_a_folder_holding_it_even_with_overwrite(writable_checkpoint, capsys):
    for out in (writable_checkpoint, writable_checkpoint.parent):
        assert main(["export", "--checkpoint", str(writable_checkpoint), "--out", str(out), "--overwrite"]) != 0
        assert "--checkpoint folder" in one_line_error(capsys)
    assert (writable_checkpoint / "model.safetensors").is_file()


def test_overwrite_replaces_a_users_folder_whole_for_eval_as_for_export(tiny_checkpoint, tmp_path):
    """--overwrite means one thing: eval used to merge into the folder (keeping the user's files)."""
    for name in ("eval", "release"):
        out = tmp_path / name
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        if name == "eval":
            eval_folder(tiny_checkpoint, out, tmp_path, "--overwrite")
            assert (out / "results.md").is_file()
        else:
            assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--overwrite"]) == 0
        assert not (out / "notes.txt").exists() and folder_kind(out) == name


def test_an_evaluation_rerun_replaces_its_old_files(tiny_checkpoint, tmp_path):
    out = eval_folder(tiny_checkpoint, tmp_path / "eval", tmp_path)
    (out / "stale.png").write_text("from an older run")
    eval_folder(tiny_checkpoint, out, tmp_path)
    assert not (out / "stale.png").exists() and (out / "results.md").is_file()


def test_a_folder_holding_only_sub_folders_is_the_users(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "photos" / "2019").mkdir(parents=True)
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) != 0
    assert "not written by moe-ts (holds photos)" in one_line_error(capsys)
    assert (out / "photos" / "2019").is_dir()


def test_an_old_marker_keeps_working_by_its_side_files(tmp_path):
    from moe_ts.io.output_dir import check_output_dir, folder_kind, mark

    old = tmp_path / "old_finetuned"
    old.mkdir()
    (old / MARKER).write_text("model\n")  # what every model folder's marker said before kinds
    (old / "finetune.json").write_text("{}")
    assert folder_kind(old) == "finetuned"  # the module's reading, not the first line
    check_output_dir(old, kind="finetuned")
    with pytest.raises(OutputDirError, match="is a finetuned model .*not a distilled student"):
        check_output_dir(old, kind="student")
    plain = tmp_path / "old_release"
    plain.mkdir()
    (plain / MARKER).write_text("model\n")
    check_output_dir(plain, kind="release")  # an old release had the same marker as RUN/final
    mark(plain, "model")
    with pytest.raises(OutputDirError, match="not a release"):
        check_output_dir(plain, kind="release")


# A real `moe-ts export` whose weights write pauses once the file is written (inside its staging folder).
PAUSED_EXPORT = textwrap.dedent("""
    import sys, time
    import moe_ts.io.hub as hub
    real = hub._atomic_save_safetensors

    def paused(tensors, path):
        real(tensors, path)
        print(path.parent, flush=True)
        time.sleep(600)

    hub._atomic_save_safetensors = paused
    from cli.main import main
    sys.exit(main(["export", "--checkpoint", sys.argv[1], "--out", sys.argv[2]]))
""")


def _start_export(checkpoint: Path, target: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_EXPORT, str(checkpoint), str(target)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_staging_left_by_a_kill_9_is_cleaned_by_the_next_write_in_that_folder(tiny_checkpoint, tmp_path):
    release = tmp_path / "release"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(release)]) == 0
    before = (release / "model.safetensors").read_bytes()
    killed, dead_staging = _start_export(tiny_checkpoint, release)
    alive, live_staging = _start_export(tiny_checkpoint, tmp_path / "other")
    try:
        assert dead_staging.name.startswith(".release.tmp-") and (dead_staging / "model.safetensors").is_file()
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        assert (release / "model.safetensors").read_bytes() == before  # the old release is untouched
        assert dead_staging.is_dir() and live_staging.is_dir()
        assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "third")]) == 0
        assert not dead_staging.exists()  # its writer is dead: removed by the next write in the same folder
        assert live_staging.is_dir()  # a writer still at work keeps its staging folder
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_a_backup_left_between_the_two_renames_is_put_back(tiny_checkpoint, tmp_path):
    """kill -9 after the old folder moved aside and before the new one moved in: the old content returns."""
    old = tmp_path / "release"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(old)]) == 0
    backup = tmp_path / ".release.old-abc123"
    backup.mkdir()
    (backup / ".moe-ts-staging").write_text(f"999999999 {socket.gethostname()}\n")  # a dead writer
    os.replace(old, backup / "release")
    time.sleep(0.01)
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "other")]) == 0
    assert (old / "model.safetensors").is_file() and not backup.exists()


def test_old_ownerless_leftovers_go_after_a_day_and_a_users_look_alike_stays(tiny_checkpoint, tmp_path):
    ours = tmp_path / ".converted.tmp-k2j4h1"  # left by moe-ts before staging folders recorded their builder
    ours.mkdir()
    (ours / "model.safetensors").write_bytes(b"half")
    theirs = tmp_path / ".photos.tmp-2019"
    theirs.mkdir()
    (theirs / "beach.jpg").write_bytes(b"jpg")
    young = tmp_path / ".release2.tmp-abc"
    young.mkdir()
    (young / "config.json").write_text("{}")
    day_ago = time.time() - 2 * 24 * 3600
    for folder in (ours, theirs):
        os.utime(folder, (day_ago, day_ago))
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "release")]) == 0
    assert not ours.exists() and (theirs / "beach.jpg").is_file() and young.is_dir()
