"""Random walks (data_prep.synthetic.generate_random_walks): integrated series whose best forecast is the last
value. Checked against their definition by statistics computed here: uncorrelated increments unless AR(1)
momentum was drawn (then lag-1 autocorrelation ≈ phi), volatility clusters only with GARCH, positive values
for geometric walks; seeded and prefix-stable; `moe-ts prepare --random-walk-count` writes them."""
import json
import re

import numpy as np
import pytest

from data_prep import prepare
from data_prep.corpus import load_corpus_dataset
from data_prep.synthetic import generate_random_walks

WALKS = generate_random_walks(300, seed=3)


def _increments(values: np.ndarray, kind: str) -> np.ndarray:
    return np.diff(np.log(values) if "geometric" in kind else values)


def _autocorr(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x[1:] * x[:-1]).sum() / (x * x).sum())


def test_seeded_prefix_stable_and_in_range():
    assert all(512 <= len(s) <= 2048 and np.isfinite(s.target).all() and s.dataset == "random_walk" for s in WALKS)
    again = generate_random_walks(5, seed=3)
    assert all(np.array_equal(a.target, b.target) and a.item_id == b.item_id for a, b in zip(again, WALKS))
    assert not np.array_equal(generate_random_walks(1, seed=4)[0].target[:512], WALKS[0].target[:512])
    assert len({len(s) for s in WALKS}) > 100
    with pytest.raises(ValueError, match="min_length <= max_length"):
        generate_random_walks(1, min_length=100, max_length=50)


def test_every_variant_is_drawn_and_geometric_walks_are_positive():
    kinds = [s.attributes["kind"] for s in WALKS]
    for part, share in (("gaussian", 0.5), ("garch", 0.3), ("ar", 0.4), ("drift", 0.3), ("geometric", 0.3)):
        seen = np.mean([any(p.startswith(part) for p in k.split("+")) for k in kinds])
        assert abs(seen - share) < 0.1, (part, seen)
    assert all((s.target > 0).all() for s in WALKS if "geometric" in s.attributes["kind"])
    assert any((s.target < 0).any() for s in WALKS if "geometric" not in s.attributes["kind"])


def test_increments_are_uncorrelated_unless_momentum_was_drawn():
    plain, momentum = [], []
    for s in WALKS:
        kind = s.attributes["kind"]
        rho = _autocorr(_increments(s.target, kind))
        phi = next((float(p[2:]) for p in kind.split("+") if p.startswith("ar")), None)
        (plain if phi is None else momentum).append((rho, phi))
    assert abs(np.mean([r for r, _ in plain])) < 0.02 and max(abs(r) for r, _ in plain) < 0.2
    errors = [r - phi for r, phi in momentum]
    assert abs(np.mean(errors)) < 0.03 and max(abs(e) for e in errors) < 0.25
    # so the last value is the better forecast of a walk's last 64 points than its mean
    naive_wins = [np.abs(s.target[-64:] - s.target[-65]).mean() < np.abs(s.target[-64:] - s.target[:-64].mean()).mean()
                  for s in WALKS]
    assert np.mean(naive_wins) > 0.85


def test_volatility_clusters_only_with_garch():
    def clustering(s):
        inc = _increments(s.target, s.attributes["kind"])
        return _autocorr(np.abs(inc - inc.mean()))

    no_momentum = [s for s in WALKS if "+ar" not in "+" + s.attributes["kind"]]
    garch = [clustering(s) for s in no_momentum if "garch" in s.attributes["kind"]]
    calm = [clustering(s) for s in no_momentum if "garch" not in s.attributes["kind"]]
    assert np.mean(garch) > 0.08 and abs(np.mean(calm)) < 0.03


def test_prepare_writes_random_walks_only_when_asked(tmp_path, capsys):
    args = ["--datasets", "m4_hourly", "--max-series-per-dataset", "4", "--synthetic-count", "0", "--kernelsynth-count",
            "0", "--periodic-count", "0", "--tsmixup-count", "0"]
    assert prepare.main(["--out", str(tmp_path / "c"), *args, "--random-walk-count", "5"]) == 0
    assert re.search(r"^random_walk +5 +\d+  seed 0$", capsys.readouterr().out, re.M)
    corpus = load_corpus_dataset(tmp_path / "c").to_pandas()
    walks = corpus[corpus.dataset == "random_walk"]
    assert len(walks) == 5
    np.testing.assert_array_equal(walks.target.iloc[2], generate_random_walks(5, seed=0)[2].target)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["random_walk_count"] == 5
    assert prepare.main(["--out", str(tmp_path / "none"), *args]) == 0  # default 0: corpora built before are unchanged
    assert "random_walk" not in set(load_corpus_dataset(tmp_path / "none")["dataset"])
    with pytest.raises(SystemExit, match="--random-walk-count must be >= 0"):
        prepare.main(["--out", str(tmp_path / "bad"), *args, "--random-walk-count", "-1"])
