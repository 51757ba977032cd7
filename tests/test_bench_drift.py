"""The drift benchmark's log summary: rows read back, mean and seed-to-seed sd, target verdicts."""

import numpy as np

from benchmarks import bench_drift

LOG = """\
| data | variant | seed | sweeps | start | test RMSE | alpha mean | cov@0.9 |
|---|---|---:|---:|---|---:|---:|---:|
| toy | default | 0 | 250 | map | 0.9000 | 2.1 | 0.900 |
| toy | default | 0 | 1200 | map | 0.9010 | 2.2 | 0.905 |
<!-- toy default seed 0 map: 1,200 sweeps in 3 s (3 CPU s) -->
| toy | default | 1 | 250 | map | 0.9020 | 2.3 | 0.910 |
| toy | default | 1 | 1200 | map | 0.9100 | 2.4 | 0.895 |
| toy | default | 0 | 250 | random | 0.8000 | 2.0 | 0.900 |
| toy | default | 1 | 250 | random | 0.8010 | 2.0 | 0.900 |
| toy | fixed2 | 0 | 250 | map | 0.9500 | 2 | 0.870 |
| toy | fixed2 | 1 | 250 | map | 0.9600 | 2 | 0.870 |
"""


def test_rows_are_read_back_and_grouped_by_cell():
    rows = bench_drift.parse_rows(LOG)
    assert len(rows) == 8  # header, rule and comment skipped
    assert rows[0] == ("toy", "default", 0, 250, "map", 0.9, 2.1, 0.9)
    table = bench_drift.group(rows + [("toy", "default", 1, 1200, "map", 0.9050, 2.4, 0.895)])  # a rerun replaces
    n, mean, sd, alpha, cover = table[("toy", "default", 1200, "map")]
    assert n == 2
    np.testing.assert_allclose(mean, (0.9010 + 0.9050) / 2)
    np.testing.assert_allclose(sd, np.sqrt(2 * 0.0020 ** 2))  # ddof = 1 of two values 0.004 apart
    np.testing.assert_allclose((alpha, cover), ((2.2 + 2.4) / 2, (0.905 + 0.895) / 2))


def test_target_verdicts_use_two_seed_to_seed_sd():
    lines = bench_drift.targets(bench_drift.group(bench_drift.parse_rows(LOG)), "toy")
    # 1,200 vs 250, map: means 0.9055 vs 0.9010, sds 0.0064 and 0.0014: +0.0045 <= 0.0127
    assert lines[0] == "1,200 vs 250 sweeps, map start: met (+0.0045, tolerance 0.0127)"
    # MAP vs random at 250: 0.9010 vs 0.8005, sd 0.0014: missed by far (two-sided)
    assert lines[1] == "MAP vs random, 250 sweeps: **missed** (+0.1005, tolerance 0.0028)"
    # the default is better than fixed2 (negative difference): met
    assert lines[2] == "default vs fixed2, 250 sweeps, map start: met (-0.0540, tolerance 0.0141)"
    assert len(lines) == 3  # no random 1,200 cells, no learned variant


def test_one_seed_has_no_verdict():
    rows = [r for r in bench_drift.parse_rows(LOG) if r[2] == 0]
    lines = bench_drift.targets(bench_drift.group(rows), "toy")
    assert lines[0] == "1,200 vs 250 sweeps, map start: +0.0010 (no sd: 1 seed)"
