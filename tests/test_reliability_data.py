"""Issue 26: the data layer under faults and bad input never returns a silently wrong result.

Corrupted and truncated rating files, datetime timestamp columns, and split arguments that only
look like numbers. The synthetic fixture tests need no data; the ``realdata`` ones damage a copy
of the shared MovieLens-100K files and skip when those are absent.
"""

import shutil

import numpy as np
import pandas as pd
import pytest

from bayesmf import ConfigError, DataError, ParseError, Ratings, datasets, splits
from bayesmf.data import MISSING_TIMESTAMP, synthetic

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t302\t5\t881251000\n"


def write(tmp_path, rel, text):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- defect 4: datetime timestamp columns become Unix seconds, in one place -------------------------
STAMPS = ["2000-01-01 00:00:01", "2018-09-24 13:45:30", "1997-09-20 03:05:10"]
UNIX = [946684801, 1537796730, 874724710]


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_from_pandas_and_from_arrays_store_datetimes_as_unix_seconds(unit):
    when = pd.Series(pd.to_datetime(STAMPS)).astype(f"datetime64[{unit}]")
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 2], "rating": [4.0, 3.0, 5.0], "t": when})
    assert Ratings.from_pandas(df, timestamp="t").timestamps.tolist() == UNIX
    arr = when.to_numpy()
    assert arr.dtype == np.dtype(f"datetime64[{unit}]")
    assert Ratings.from_arrays([0, 1, 2], [0, 0, 1], [4, 3, 5], arr).timestamps.tolist() == UNIX


def test_timezone_aware_datetimes_are_converted_to_utc_seconds():
    berlin = pd.Series(pd.to_datetime(STAMPS)).dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 2], "rating": [4.0, 3.0, 5.0], "t": berlin})
    assert Ratings.from_pandas(df, timestamp="t").timestamps.tolist() == UNIX
    assert Ratings.from_arrays([0, 1, 2], [0, 0, 1], [4, 3, 5], berlin).timestamps.tolist() == UNIX
    local = pd.Series(pd.to_datetime(["2000-01-01 01:00:01"])).dt.tz_localize("Europe/Berlin")
    assert Ratings.from_arrays([0], [0], [4], local).timestamps.tolist() == [946684801]


def test_missing_and_pre_epoch_datetimes():
    when = pd.Series(pd.to_datetime([STAMPS[0], None, STAMPS[2]]))
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 2], "rating": [4.0, 3.0, 5.0], "t": when})
    r = Ratings.from_pandas(df, timestamp="t")
    assert r.timestamps.tolist() == [UNIX[0], MISSING_TIMESTAMP, UNIX[2]] and r.missing_timestamps == 1
    old = np.array(["1999-12-31T23:59:59", "1969-12-31T23:59:59"], dtype="datetime64[s]")
    with pytest.raises(DataError, match=r"timestamps row 1: 1969-12-31T23:59:59 is before 1970"):
        Ratings.from_arrays([0, 1], [0, 0], [4, 3], old)
    with pytest.raises(DataError, match="timestamps must be integers .* or datetimes"):
        Ratings.from_arrays([0], [0], [4], np.array(["2000-01-01"]))


# -- defect 8 (data part): split arguments are checked, not coerced -----------------------------------
@pytest.fixture(scope="module")
def ratings():
    return synthetic(n_users=30, n_items=20, n_ratings=300, rank=2, seed=0).ratings


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: splits.kfold(r, k=2.7), "k must be an integer.*2.7"),
        (lambda r: splits.kfold(r, k="3"), "k must be an integer.*'3'"),
        (lambda r: splits.kfold(r, k=True), "k must be an integer.*True"),
        (lambda r: splits.kfold(r, k=1), r"k must be an integer in \[2, 300\], got 1"),
        (lambda r: splits.kfold(r, k=301), r"k must be an integer in \[2, 300\], got 301"),
        (lambda r: splits.random(r, test_fraction=None), "test_fraction .* got None"),
        (lambda r: splits.random(r, test_fraction="0.2"), "test_fraction .* got '0.2'"),
        (lambda r: splits.random(r, test_fraction=float("nan")), "test_fraction .* got nan"),
        (lambda r: splits.per_user(r, test_fraction=True), "test_fraction .* got True"),
        (lambda r: splits.random(r, 0.2, seed=1.5), "seed must be an integer.*1.5"),
        (lambda r: splits.random(r, 0.2, seed=-1), "seed must be an integer in .* got -1"),
        (lambda r: splits.per_user(r, 0.2, min_train=1.5), "min_train must be an integer.*1.5"),
        (lambda r: splits.leave_one_out(r, seed="0"), "seed must be an integer.*'0'"),
    ],
)
def test_bad_split_arguments_are_config_errors_naming_argument_and_value(ratings, call, match):
    with pytest.raises(ConfigError, match=match):
        call(ratings)


def test_bad_temporal_cutoff(ratings):
    timed = Ratings.from_arrays(ratings.users, ratings.items, ratings.values, np.arange(ratings.nnz))
    with pytest.raises(ConfigError, match="cutoff must be an integer.*1.5"):
        splits.temporal(timed, cutoff=1.5)
    with pytest.raises(ConfigError, match="test_fraction .* got None"):
        splits.temporal(timed, test_fraction=None)
