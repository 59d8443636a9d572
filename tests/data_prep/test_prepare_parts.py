"""`moe-ts prepare` at scale: source files read by several processes give the same corpus as one, the corpus is
sharded to a size bound with every shard's SHA-256 in the manifest, and a changed shard is named in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep import leak_check, prepare
from data_prep.corpus import CorpusError, check_manifest, load_corpus_dataset
from tests.data_prep import upstream_fixtures as fx

NO_SYNTHETIC = ["--synthetic-count", "0", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A LOTSA folder in three Arrow shards of 40 rows, a tree of LOTSA folders and a Chronos file."""
    import pandas as pd

    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    rows = [{"item_id": f"s{i}", "start": pd.Timestamp("2020-01-01") + pd.Timedelta(days=i), "freq": "D",
             "target": rng.normal(i, 1, 50 + i).astype(np.float32)} for i in range(120)]
    fx._save(root / "lotsa" / "sharded", rows, fx._univariate_features(), num_shards=3)
    fx.lotsa_tree(root / "lotsa")
    chronos_file, _ = fx.chronos_two_targets(root / "chronos")
    return root, ["--source", f"lotsa:{root / 'lotsa'}", "--source", f"chronos:{chronos_file.parent}"]


def build(tmp_path, name, sources, *extra):
    out = tmp_path / name
    assert prepare.main(["--out", str(out), "--no-registered", *sources, *NO_SYNTHETIC, "--synthetic-count", "5",
                         *extra]) == 0
    return out


def test_several_processes_build_the_same_corpus_as_one(tmp_path, sources):
    root, args = sources
    one = build(tmp_path, "one", args)
    three = build(tmp_path, "three", args, "--num-proc", "3")
    a, b = load_corpus_dataset(one).to_list(), load_corpus_dataset(three).to_list()
    assert len(a) == len(b) > 120
    for ra, rb in zip(a, b):  # same rows in the same order, every value and field
        assert {k: v for k, v in ra.items() if k != "target"} == {k: v for k, v in rb.items() if k != "target"}
        np.testing.assert_array_equal(np.asarray(ra["target"], np.float32), np.asarray(rb["target"], np.float32))
    ma, mb = check_manifest(one), check_manifest(three)
    assert [s["name"] for s in ma["sources"]] == [s["name"] for s in mb["sources"]]
    for sa, sb in zip(ma["sources"], mb["sources"]):  # per-file statistics merged back into one per dataset
        assert (sa["series"], sa["points"], sa["dropped_short"]) == (sb["series"], sb["points"], sb["dropped_short"])
    sharded = next(s for s in ma["sources"] if s["name"] == "sharded")
    assert sharded["series"] == 120 and sharded["points"] == sum(50 + i for i in range(120))
    assert [r["item_id"] for r in a if r["dataset"] == "sharded"] == [f"s{i}" for i in range(120)]
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())  # the parts are gone


def test_shards_are_bounded_and_listed_with_their_checksums(tmp_path, sources):
    import hashlib

    root, args = sources
    out = build(tmp_path, "small_shards", args, "--max-shard-size", "20KB")
    shards = check_manifest(out)["shards"]
    files = sorted(p.name for p in out.glob("*.arrow"))
    assert len(shards) >= 3 and sorted(s["file"] for s in shards) == files
    for shard in shards:
        data = (out / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(data) < 60_000  # the bound holds up to one record batch


def test_a_changed_shard_is_named_in_one_line(tmp_path, sources, capsys):
    root, args = sources
    out = build(tmp_path, "damaged", args)
    shard = out / check_manifest(out)["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the SHA-256 sees it
    shard.write_bytes(bytes(data))
    assert leak_check.main([str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and shard.name in err and "SHA-256" in err
    shard.write_bytes(bytes(data[:-100]))  # truncated: refused wherever the manifest is read (a stat per shard)
    with pytest.raises(CorpusError, match=f"{shard.name}: .* bytes, the manifest says"):
        check_manifest(out)


def test_nothing_to_write_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="nothing to write"):
        prepare.main(["--out", str(tmp_path / "empty"), "--no-registered", *NO_SYNTHETIC, "--synthetic-count", "0"])
    assert not (tmp_path / "empty").exists()


def test_num_proc_must_be_positive(tmp_path):
    with pytest.raises(SystemExit, match="--num-proc must be >= 1"):
        prepare.main(["--out", str(tmp_path / "x"), "--num-proc", "0"])


def test_manifests_without_shards_still_open(tmp_path, sources):
    root, args = sources
    out = build(tmp_path, "old", args)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]  # as written before shards were recorded
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert check_manifest(out)["complete"] is True
    assert leak_check.main([str(out)]) == 0


def test_prepare_replaces_only_a_corpus_and_never_its_own_input(tmp_path, sources):
    root, args = sources
    other = tmp_path / "eval"
    other.mkdir()
    from moe_ts.io.output_dir import MARKER, MARKER_FORMAT

    (other / MARKER).write_text(f"eval\n{MARKER_FORMAT}\n")  # another command's folder
    with pytest.raises(SystemExit, match="not a corpus|not .*corpus"):
        prepare.main(["--out", str(other), "--no-registered", *args, *NO_SYNTHETIC, "--synthetic-count", "2"])
    lotsa = root / "lotsa" / "sharded"
    with pytest.raises(SystemExit, match="own input"):
        prepare.main(["--out", str(lotsa), "--overwrite", "--no-registered", "--source", f"lotsa:{lotsa}",
                      *NO_SYNTHETIC])
    assert (lotsa / "state.json").is_file()


def test_asking_only_for_held_out_datasets_says_why(tmp_path):
    with pytest.raises(SystemExit, match=r"--datasets etth1: held out of every pretraining corpus \(etth1: lsf"):
        prepare.main(["--out", str(tmp_path / "c"), "--datasets", "etth1", *NO_SYNTHETIC, "--synthetic-count", "0"])
    assert not (tmp_path / "c").exists()
