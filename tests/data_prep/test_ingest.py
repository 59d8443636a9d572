"""`moe-ts prepare --source`: upstream layouts (LOTSA / GIFT-Eval save_to_disk, Chronos Parquet, long and wide
tables) ingested value by value, decontaminated like registered data, recorded with their weights in the
manifest, sampled by those weights; bad input refused in one line with nothing left behind."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from data_prep import prepare
from data_prep.corpus import check_manifest, load_corpus_dataset, manifest_weights, open_corpus
from data_prep.frequency import canonical_freq
from pretrain.data import WindowSampler
from tests.data_prep import upstream_fixtures as fx

NO_SYNTHETIC = ["--synthetic-count", "0", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]
WEIGHTS = {"hourly_nan": 4.0, "weekly_3var": 0.5, "chronos_pair": 2.0, "never_built": 3.0}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    tree, lotsa = fx.lotsa_tree(root / "in")
    chronos_file, chronos = fx.chronos_two_targets(root / "in")
    long_file, long = fx.long_frame(root / "in", "csv")
    wide_file, wide = fx.wide_frame(root / "in", "parquet")
    weights = root / "weights.yaml"
    weights.write_text("weight_map:\n" + "".join(f"  {k}: {v}\n" for k, v in WEIGHTS.items()))
    out = root / "corpus"
    assert prepare.main(["--out", str(out), "--no-registered", "--source", f"lotsa:{tree}",
                         "--source", f"chronos:{chronos_file.parent}", "--source", f"csv:{long_file}",
                         "--source", f"parquet:{root / 'in' / '*.parquet'}", "--weights", str(weights),
                         *NO_SYNTHETIC]) == 0
    rows = {r["item_id"]: r for r in load_corpus_dataset(out).to_list()}
    return SimpleNamespace(out=out, rows=rows, lotsa=lotsa, chronos=chronos, long=long, wide=wide, tree=tree,
                           chronos_file=chronos_file, long_file=long_file, wide_file=wide_file)


def _same(row: dict, values, start, freq: str, dataset: str, group: str = "", variate: int = 0,
          covariate: bool = False) -> None:
    np.testing.assert_array_equal(np.asarray(row["target"], np.float32), np.asarray(values, np.float32))
    assert (row["start"], row["freq"], row["dataset"]) == (start, freq, dataset)
    assert (row["group_id"], row["variate"], row["covariate"]) == (group, variate, covariate)
    assert (row["source_item_id"], row["span_start"], row["span_end"]) == (row["item_id"], 0, len(values))


def test_lotsa_rows_values_starts_and_frequencies(ingested):
    rows = ingested.rows
    for src in ingested.lotsa["hourly_nan"]:  # NaN kept as missing, "H" -> "h"
        _same(rows[src["item_id"]], src["target"], src["start"].to_pydatetime(), "h", "hourly_nan")
        assert np.isnan(rows[src["item_id"]]["target"][0])
    for src in ingested.lotsa["daily_missing_start"]:  # 1970-01-01 is an unknown start
        start = None if src["start"] == fx.MISSING_START else src["start"].to_pydatetime()
        _same(rows[src["item_id"]], src["target"], start, "D", "daily_missing_start")
    assert rows["d1"]["start"] is None
    for src in ingested.lotsa["weekly_3var"]:  # D univariate rows, grouped, variate-major
        for v in range(3):
            _same(rows[f"{src['item_id']}/{v}"], src["target"][v], src["start"].to_pydatetime(),
                  canonical_freq("W-SUN"), "weekly_3var", src["item_id"], v)
    for src in ingested.lotsa["covariates"]:  # the target, and its covariates marked as such
        _same(rows[src["item_id"]], src["target"], src["start"].to_pydatetime(), "15min", "covariates", src["item_id"])
        for k in range(2):
            _same(rows[f"{src['item_id']}/past_feat_dynamic_real/{k}"], src["past_feat_dynamic_real"][k],
                  src["start"].to_pydatetime(), "15min", "covariates", src["item_id"], k, True)


def test_chronos_rows_one_per_target_column(ingested):
    for src in ingested.chronos:
        for v, column in enumerate(("price", "volume")):
            _same(ingested.rows[f"{src['id']}/{column}"], src[column], src["timestamp"][0].to_pydatetime(), "D",
                  "chronos_pair", src["id"], v)
    assert not any("category" in item for item in ingested.rows)  # static columns are not series


def test_long_and_wide_frames(ingested):
    long = ingested.long
    for item in ("a", "b"):
        part = long[long.item_id == item].set_index("timestamp").asfreq("h")  # b lacks a step: NaN there
        for v, column in enumerate(("load", "temp")):
            _same(ingested.rows[f"{item}/{column}"], part[column].to_numpy(), part.index[0].to_pydatetime(), "h",
                  "long_frame", item, v)
    assert np.isnan(ingested.rows["b/load"]["target"][5])
    for column in ("north", "south"):
        _same(ingested.rows[column], ingested.wide[column].to_numpy(), pd.Timestamp("2015-01-01").to_pydatetime(),
              "MS", "wide_frame")


def test_manifest_records_sources_and_weights(ingested):
    manifest = check_manifest(ingested.out)
    by_kind = {rec["kind"]: rec for rec in manifest["ingested"]}
    lotsa = by_kind["lotsa"]
    assert lotsa["path"] == str(ingested.tree)
    assert sorted(lotsa["datasets"]) == ["covariates", "daily_missing_start", "hourly_nan", "weekly_3var"]
    assert lotsa["rows"] == 4 + 3 + 6 + 6 and lotsa["covariate_rows"] == 4
    assert lotsa["points"] == (30 + 40 + 50 + 60) + (25 + 26 + 27) + 3 * (20 + 21) + 6 * 40
    assert by_kind["chronos"]["rows"] == 6 and by_kind["chronos"]["points"] == 2 * (15 + 20 + 25)
    assert by_kind["csv"] == {"kind": "csv", "path": str(ingested.long_file), "datasets": ["long_frame"], "rows": 4,
                              "points": 4 * 12, "covariate_rows": 0}
    assert by_kind["parquet"]["datasets"] == ["wide_frame"] and by_kind["parquet"]["rows"] == 2
    assert manifest["rows"] == len(ingested.rows) == sum(rec["rows"] for rec in manifest["ingested"])
    # weights of datasets the corpus holds (never_built is reported and dropped)
    assert manifest["weights"] == {k: v for k, v in WEIGHTS.items() if k != "never_built"}
    assert manifest_weights(ingested.out) == manifest["weights"]
    assert manifest["decontaminated"] == []  # checked against every available evaluation set; nothing to cut


def test_sampler_draws_datasets_by_manifest_weights_and_never_a_covariate(ingested):
    corpus = open_corpus(ingested.out)
    assert corpus.covariate is not None and corpus.covariate.sum() == 4
    weights = manifest_weights(ingested.out)
    sampler = WindowSampler(corpus, patch_size=4, seq_patches=8, dataset_weights=weights, seed=3)
    counts = {name: int(((corpus.dataset == name) & ~corpus.covariate).sum()) for name in sampler.dataset_names}
    expected = np.array([counts[n] * weights.get(n, 1.0) for n in sampler.dataset_names])
    np.testing.assert_allclose(sampler.dataset_probs, expected / expected.sum())
    draws = np.array([sampler.draw_series() for _ in range(20000)])
    assert not corpus.covariate[draws].any()
    seen = np.array([(corpus.dataset[draws] == n).mean() for n in sampler.dataset_names])
    np.testing.assert_allclose(seen, sampler.dataset_probs, atol=0.015)
    plain = WindowSampler(corpus, patch_size=4, seq_patches=8, seed=3)  # without weights: by series count
    assert not np.allclose(plain.dataset_probs, sampler.dataset_probs)


def test_trainer_uses_manifest_weights_unless_the_config_names_a_mixture(ingested):
    from pretrain import trainer

    corpus = open_corpus(ingested.out)

    def run(**train):
        tc = SimpleNamespace(**{"min_window_patches": 2, "max_windows_per_series": 16, "mixture": {},
                                "mixture_default": "series", "mixture_share": {}, "seed": 0,
                                "sampler": "sequential", "loader_workers": 0, "multivariate_share": 0.0,
                                "max_variates": 128, **train})
        return SimpleNamespace(train=tc, model=SimpleNamespace(patch_size=4, max_seq_len=8))

    dist = SimpleNamespace(rank=0, is_main=False)
    weighted = trainer._sampler(run(), corpus, dist)
    direct = WindowSampler(corpus, patch_size=4, seq_patches=8, dataset_weights=manifest_weights(ingested.out))
    np.testing.assert_allclose(weighted.dataset_probs, direct.dataset_probs)
    explicit = trainer._sampler(run(mixture={"hourly_nan": 1.0, "wide_frame": 1.0}), corpus, dist)
    assert dict(zip(explicit.dataset_names, explicit.dataset_probs))["hourly_nan"] == pytest.approx(0.5)


def test_ingested_test_windows_are_decontaminated_like_registered_ones(tmp_path):
    from data_prep.leak_check import check_corpus
    from data_prep.registry import load_series, test_span

    full = load_series("m4_hourly", max_series=2)
    frame = pd.DataFrame({"date": pd.date_range("2000-01-01", periods=len(full[0]), freq="h"),
                          **{s.item_id: np.resize(s.target, len(full[0])) for s in full[:1]}})
    frame.to_parquet(tmp_path / "copied.parquet", index=False)
    out = tmp_path / "corpus"
    assert prepare.main(["--out", str(out), "--no-registered", "--source", f"parquet:{tmp_path / 'copied.parquet'}",
                         *NO_SYNTHETIC]) == 0
    manifest = check_manifest(out)
    start, _ = test_span("m4_hourly", len(full[0]))
    assert [(c["dataset"], c["kept"]) for c in manifest["decontaminated"]] == [("copied", start)]
    row = load_corpus_dataset(out)[0]
    np.testing.assert_array_equal(row["target"], full[0].target[:start])
    assert check_corpus(out, names=["m4_hourly"]).ok
    assert manifest["ingested"][0]["points"] == start


@pytest.mark.parametrize("name", sorted(fx.BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_and_problem_and_nothing_is_kept(tmp_path, name):
    kind, build = fx.BAD_INPUTS[name]
    bad = build(tmp_path / "in")
    source = f"{kind}:{bad if kind == 'lotsa' else bad.parent}"
    problem = {"unknown column": "unknown feature column 'feat_mystery'", "ragged variates": "ragged variates",
               "frequency": "frequency 'every-blue-moon' is not a pandas alias", "empty shard": "empty shard",
               "non-monotone": "row 2 (id 'backwards'): position 7", "empty chronos shard": "empty shard"}[name]
    good, _ = fx.lotsa_hourly_nan(tmp_path / "good")  # a good source first: its rows are written, then dropped
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as err:
        prepare.main(["--out", str(tmp_path / "corpus"), "--no-registered", "--source", f"lotsa:{good}",
                      "--source", source, *NO_SYNTHETIC])
    message = str(err.value)
    assert "\n" not in message and problem in message, message
    assert message.startswith(str(bad)), message  # the shard file (LOTSA: inside the folder) or the Parquet file
    assert not (tmp_path / "corpus").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder, no Arrow cache left


@pytest.mark.parametrize("text, problem", [
    ("hourly_nan: -1\n", "weight of 'hourly_nan' must be a finite number >= 0, got -1"),
    ("[1, 2]\n", "weights must be a map dataset -> weight"),
    ("hourly_nan: .nan\n", "must be a finite number"),
])
def test_bad_weights_file_is_one_line(tmp_path, text, problem):
    good, _ = fx.lotsa_hourly_nan(tmp_path)
    weights = tmp_path / "w.yaml"
    weights.write_text(text)
    with pytest.raises(SystemExit) as err:
        prepare.main(["--out", str(tmp_path / "corpus"), "--no-registered", "--source", f"lotsa:{good}",
                      "--weights", str(weights), *NO_SYNTHETIC])
    assert str(err.value).startswith(f"{weights}: ") and problem in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "corpus").exists()


def test_bad_source_spec_and_name_clash_are_one_line(tmp_path):
    good, _ = fx.lotsa_hourly_nan(tmp_path)
    with pytest.raises(SystemExit, match="expected KIND:PATH with KIND one of lotsa, chronos, parquet, csv, gluonts"):
        prepare.main(["--out", str(tmp_path / "c"), "--source", f"tfrecord:{good}", *NO_SYNTHETIC])
    with pytest.raises(SystemExit, match="'hourly_nan' is also in --source lotsa:"):
        prepare.main(["--out", str(tmp_path / "c"), "--no-registered", "--source", f"lotsa:{good}",
                      "--source", f"lotsa:{good}", *NO_SYNTHETIC])
    with pytest.raises(SystemExit, match=r"no file matches"):
        prepare.main(["--out", str(tmp_path / "c"), "--source", f"parquet:{tmp_path}/*.nothing", *NO_SYNTHETIC])
    assert not (tmp_path / "c").exists()


def test_a_corpus_written_before_the_variate_and_covariate_columns_still_opens(tmp_path):
    import datasets

    from data_prep.leak_check import check_corpus

    old = {"item_id": ["x"], "dataset": ["d"], "freq": ["h"], "start": [pd.Timestamp("2020-01-01")],
           "target": [np.arange(40, dtype=np.float32).tolist()], "group_id": [""], "source_item_id": ["x"],
           "span_start": [0], "span_end": [40]}
    datasets.Dataset.from_dict(old).save_to_disk(str(tmp_path / "old"))
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"complete": True}))
    assert len(load_corpus_dataset(tmp_path / "old")) == 1
    corpus = open_corpus(tmp_path / "old")
    assert corpus.covariate is None and manifest_weights(tmp_path / "old") is None
    sampler = WindowSampler(corpus, patch_size=4, seq_patches=8)
    assert sampler.num_covariates == 0 and math.isclose(sampler.dataset_probs[0], 1.0)
    assert check_corpus(tmp_path / "old", names=["m4_hourly"]).ok


def test_chronos_row_frequency_cache_agrees_with_pandas_whatever_the_order():
    from data_prep.frequency import inferred_alias
    from data_prep.readers import chronos

    rng = np.random.default_rng(0)
    freqs = ["h", "D", "2D", "W-SUN", "W-WED", "2W-MON", "15min", "s", "MS", "B", "QS", "YE"]
    chronos._ALIAS_BY_STEP.clear()
    for _ in range(60):  # random starts: weekly steps starting on other weekdays must not reuse a cached anchor
        freq = freqs[rng.integers(len(freqs))]
        start = pd.Timestamp("2019-01-01") + pd.Timedelta(days=int(rng.integers(0, 400)))
        index = pd.date_range(start, periods=int(rng.integers(3, 30)), freq=freq)
        assert chronos._alias_of_constant_step(index) == inferred_alias(index), (freq, start)
