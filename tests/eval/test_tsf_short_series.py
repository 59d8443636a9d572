"""`moe-ts eval --tsf` on a user's file: a series too short for the test window is left out and named, the others
are evaluated; a file where every series is too short is one clear error."""
from __future__ import annotations

import pytest

from eval.protocols import tsf_task

HEADER = "@relation t\n@attribute series_name string\n@frequency monthly\n@horizon 3\n@missing false\n" \
         "@equallength false\n@data\n"


def test_a_too_short_series_is_left_out_and_named(tmp_path):
    path = tmp_path / "short.tsf"
    path.write_text(HEADER + "s1:" + ",".join(map(str, range(1, 31))) + "\ns2:1,2,3\ns3:"
                    + ",".join(map(str, range(5, 35))) + "\n")
    task = tsf_task(path)
    assert task.item_ids == ["s1", "s3"] and len(task.starts) == 2
    assert task.sampling.series_total == 3 and task.sampling.series_used == 2
    assert any("1 series too short" in d and "'s2'" in d for d in task.sampling.dropped)


def test_a_file_of_only_too_short_series_is_one_error(tmp_path):
    path = tmp_path / "tiny.tsf"
    path.write_text(HEADER + "s1:1,2\ns2:1,2,3\n")
    with pytest.raises(ValueError, match="every series is too short for 1 test window"):
        tsf_task(path)
