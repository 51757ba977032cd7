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


# -- defect 3: a corrupted ID field is a parse error, not a switch to string IDs ----------------------
@pytest.mark.parametrize("bad", ["x22", "22.5", "2 2", "none"])
def test_one_non_integer_id_in_a_movielens_file_names_file_line_and_text(tmp_path, bad):
    path = write(tmp_path, "ml-100k/u.data", U_DATA.replace("22\t377", f"{bad}\t377"))
    with pytest.raises(ParseError, match=f"user ID {bad!r} is not an integer") as info:
        datasets.load_file(path)
    assert info.value.path == str(path) and info.value.line == 3
    with pytest.raises(ParseError, match="u.data:3:"):
        datasets.load("movielens-100k", data_dir=tmp_path, download=False, check_counts=False)


def test_one_non_integer_item_id_in_ratings_dat_and_csv(tmp_path):
    dat = write(tmp_path, "ml-1m/ratings.dat", "1::1193::5::978300760\n1::66x::3::978302109\n")
    with pytest.raises(ParseError, match=r"ratings.dat:2: item ID '66x' is not an integer"):
        datasets.load_file(dat)
    csv = write(tmp_path, "ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,9\nu2,3,4.5,9\n")
    with pytest.raises(ParseError, match=r"ratings.csv:3: user ID 'u2' is not an integer"):
        datasets.load_file(csv)


def test_generic_files_declare_or_infer_the_id_type_without_switching(tmp_path):
    mixed = write(tmp_path, "x.tsv", "7\t8\t1\n9\t8\t2\n1O\t8\t3\n")
    cols = {"user": 0, "item": 1, "rating": 2}
    with pytest.raises(ParseError, match=r"x.tsv:3: user ID '1O' is not an integer.*ids='str'"):
        datasets.load_file(mixed, columns=cols)
    as_text = datasets.load_file(mixed, columns=cols, ids="str")
    assert as_text.user_map.ids().tolist() == ["1O", "7", "9"]
    words = write(tmp_path, "w.csv", "who,what,stars\nann,apple,2\nbob,pear,5\n")
    named = {"user": "who", "item": "what", "rating": "stars"}
    assert datasets.load_file(words, columns=named).user_map.ids().tolist() == ["ann", "bob"]
    with pytest.raises(ParseError, match=r"w.csv:2: user ID 'ann' is not an integer"):
        datasets.load_file(words, columns=named, ids="int")
    with pytest.raises(DataError, match="ids must be one of"):
        datasets.load_file(words, columns=named, ids="text")


# -- defect 3: known data sets must hold their published counts -------------------------------------
def test_a_short_copy_of_a_known_data_set_fails_naming_file_and_both_counts(tmp_path):
    path = write(tmp_path, "ml-100k/u.data", U_DATA)
    with pytest.raises(DataError) as info:
        datasets.load("movielens-100k", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(path) in message and "4 ratings" in message and "100,000" in message
    assert "check_counts=False" in message
    r = datasets.load("movielens-100k", data_dir=tmp_path, download=False, check_counts=False)
    assert r.nnz == 4


def test_counts_are_checked_for_npz_csv_and_predefined_folds(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    np.savez(tmp_path / "ml-1m/ml-1m_ratings.npz", user=np.array([1, 2]), item=np.array([5, 5]),
             rating=np.array([5, 4]), timestamp=np.array([100, -1]))
    with pytest.raises(DataError, match="ml-1m_ratings.npz.*2 ratings.*1,000,209"):
        datasets.load("movielens-1m", data_dir=tmp_path, download=False)
    write(tmp_path, "ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(DataError, match="ratings.csv.*1 ratings.*100,836"):
        datasets.load("movielens-latest-small", data_dir=tmp_path, download=False)
    write(tmp_path, "ml-100k/u.data", U_DATA)
    write(tmp_path, "ml-100k/u1.base", "196\t242\t3\t881250949\n")
    write(tmp_path, "ml-100k/u1.test", "22\t377\t1\t878887116\n")
    with pytest.raises(DataError, match="100,000"):
        splits.predefined("movielens-100k", "u1", data_dir=tmp_path)
    train, test = splits.predefined("movielens-100k", "u1", data_dir=tmp_path, check_counts=False)
    assert (train.nnz, test.nnz) == (1, 1)


@pytest.mark.realdata
def test_real_u_data_cut_in_half_or_corrupted_does_not_load(data_dir, tmp_path):
    shutil.copytree(data_dir / "ml-100k", tmp_path / "ml-100k")
    path = tmp_path / "ml-100k" / "u.data"
    path.chmod(0o644)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:50_000]))
    with pytest.raises(DataError) as info:
        datasets.load("movielens-100k", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value) and "50,000 ratings" in str(info.value) and "100,000" in str(info.value)

    corrupted = lines.copy()
    corrupted[4_000] = "u" + corrupted[4_000]
    path.write_text("".join(corrupted))
    with pytest.raises(ParseError, match=r"u.data:4001: user ID 'u\d+' is not an integer"):
        datasets.load("movielens-100k", data_dir=tmp_path, download=False)

    fold = tmp_path / "ml-100k" / "u1.test"
    fold.chmod(0o644)
    path.write_text("".join(lines))
    fold.write_text("".join(fold.read_text().splitlines(keepends=True)[:19_999]))
    with pytest.raises(DataError, match=r"u1.test: 19,999 ratings.*20,000"):
        splits.predefined("movielens-100k", "u1", data_dir=tmp_path)


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
