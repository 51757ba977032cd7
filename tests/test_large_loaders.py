"""The large-format loaders (MovieLens-10M/20M/25M/32M, the Netflix Prize layout) on small fixture
files written in the exact published formats: values, line-exact errors, block boundaries, memory."""

import calendar
import tracemalloc

import numpy as np
import pytest
from test_loaders import write

from bayesmf import DataError, DataNotFoundError, ParseError, datasets, splits
from bayesmf.data.io import read_delimited

ML10M = "1::122::5::838985046\n1::185::4.5::838983525\n2::122::3::868245777\n3::4::0.5::1230000000\n"
ML20M = "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n7,2,4.0,1094785740\n"


def day(text):
    """Unix seconds of a YYYY-MM-DD date's midnight UTC, by the standard library."""
    y, m, d = (int(x) for x in text.split("-"))
    return calendar.timegm((y, m, d, 0, 0, 0))


# -- MovieLens-10M ... 32M ------------------------------------------------------------------------
def test_ml10m_dat_found_under_the_data_env_var(tmp_path, monkeypatch):
    write(tmp_path, "ml-10M100K/ratings.dat", ML10M)
    monkeypatch.setenv("BAYESMF_DATA", str(tmp_path))
    r = datasets.load("ml-10m", check_counts=False)
    assert (r.nnz, r.n_users, r.n_items) == (4, 3, 3)
    df = r.to_pandas()
    assert df["item"].tolist() == [122, 185, 122, 4] and df["rating"].tolist() == [5.0, 4.5, 3.0, 0.5]
    assert r.timestamps.tolist() == [838985046, 838983525, 868245777, 1230000000]
    assert r.rating_scale == (0.5, 5.0)
    with pytest.raises(DataError, match=r"4 ratings, 3 users, 3 items, but the published movielens-10m file "
                                         r"has 10,000,054 ratings"):
        datasets.load("movielens-10m")


@pytest.mark.parametrize("size", ["20m", "25m", "32m"])
def test_ml20m_to_32m_csv(tmp_path, size):
    write(tmp_path, f"ml-{size}/ratings.csv", ML20M)
    r = datasets.load(f"ml-{size}", data_dir=tmp_path, check_counts=False)
    assert r.user_map.ids().tolist() == [1, 7] and r.item_map.ids().tolist() == [2, 29]
    np.testing.assert_array_equal(r.values, np.array([3.5, 3.5, 4.0], np.float32))
    assert r.timestamps.tolist() == [1112486027, 1112484676, 1094785740]


def test_ml32m_checks_ratings_and_users_but_not_items(tmp_path):
    write(tmp_path, "ml-32m/ratings.csv", ML20M)
    with pytest.raises(DataError, match="3 ratings, 2 users, 2 items, but .* 32,000,204 ratings, 200,948 users, "
                                        "2 items"):
        datasets.load("ml-32m", data_dir=tmp_path)


@pytest.mark.parametrize("block", [7, 23, 64, 1 << 20])
def test_blocks_give_the_whole_file_and_exact_lines(tmp_path, block):
    rng = np.random.default_rng(0)
    n = 500
    users, items = rng.integers(1, 90, n), rng.integers(1, 5000, n)
    rating, stamp = rng.integers(1, 11, n) / 2, rng.integers(10**8, 2 * 10**9, n)
    lines = [f"{u}::{i}::{r:g}::{t}" for u, i, r, t in zip(users, items, rating, stamp)]
    path = write(tmp_path, "ratings.dat", "\n".join(lines) + "\n")
    cols = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    got = read_delimited(path, "::", cols, ids="int", block_bytes=block)
    np.testing.assert_array_equal(got["user"], users)
    np.testing.assert_array_equal(got["item"], items)
    np.testing.assert_array_equal(got["rating"], rating.astype(np.float32))
    np.testing.assert_array_equal(got["timestamp"], stamp)
    # a bad field deep in the file is reported at its line whatever block it falls in
    lines[417] = lines[417].replace("::", "::x", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParseError, match=r"ratings.dat:418: item ID 'x\d+' is not an integer") as info:
        read_delimited(path, "::", cols, ids="int", block_bytes=block)
    assert info.value.line == 418


@pytest.mark.parametrize(
    "rel, text, line, message",
    [
        ("ml-10M100K/ratings.dat", ML10M + "4::12", 5, "missing rating field"),  # truncated last line
        ("ml-20m/ratings.csv", ML20M + "7,29,4.", 5, "missing timestamp field"),  # truncated last line
        ("ml-10M100K/ratings.dat", ML10M.replace("4.5", "5.5"), 2, r"rating 5.5 is outside the scale \[0.5, 5.0\]"),
        ("ml-20m/ratings.csv", ML20M.replace("1,29,", "1,29,3.5,"), 3, "expected 4 fields, found 5"),
        ("ml-10M100K/ratings.dat", ML10M.replace("2::122", "2\t122"), 3, "unexpected tab"),
    ],
)
def test_malformed_movielens_files(tmp_path, rel, text, line, message):
    path = write(tmp_path, rel, text)
    with pytest.raises(ParseError, match=message) as info:
        datasets.load(rel.split("/")[0].replace("ml-10M100K", "ml-10m"), data_dir=tmp_path, check_counts=False)
    assert (info.value.path, info.value.line) == (str(path), line)


def test_duplicate_pair_policy_names_both_lines(tmp_path):
    path = write(tmp_path, "ml-20m/ratings.csv", ML20M + "1,29,1.5,1112486099\n")
    with pytest.raises(ParseError, match=r"ratings.csv:5: duplicate \(user 1, item 29\) pair, first at "
                                         r".*ratings.csv:3; pass duplicates="):
        datasets.load("ml-20m", data_dir=tmp_path, check_counts=False)
    merged = datasets.load_file(path, rating_scale=(0.5, 5.0), duplicates="mean")
    assert merged.nnz == 3 and merged.values.tolist() == [3.5, 2.5, 4.0]
    assert merged.timestamps.tolist() == [1112486027, 1112486099, 1094785740]
    last = datasets.load_file(path, duplicates="last")
    assert last.values.tolist() == [3.5, 1.5, 4.0]


def test_peak_memory_is_a_small_multiple_of_the_arrays(tmp_path):
    n = 200_000
    rng = np.random.default_rng(1)
    text = "\n".join(f"{u}::{i}::{r}::{t}" for u, i, r, t in zip(
        rng.integers(1, 70_000, n), rng.integers(1, 65_000, n), rng.integers(1, 6, n),
        rng.integers(10**9, 2 * 10**9, n)))
    path = write(tmp_path, "ratings.dat", text + "\n")
    cols = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    tracemalloc.start()
    got = read_delimited(path, "::", cols, ids="int", block_bytes=256 << 10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    final = sum(a.nbytes for a in got.values())
    assert got["user"].size == n
    # the blocks' columns and their concatenation, plus one block's text and frame; not the file
    assert peak < 2 * final + 8 * (256 << 10), (peak, final, path.stat().st_size)


# -- the Netflix Prize layout ----------------------------------------------------------------------
MOVIES = {
    1: [(1488844, 3, "2005-09-06"), (822109, 5, "2005-05-13"), (885013, 4, "2005-10-19")],
    2: [(2059652, 4, "2005-09-05"), (1488844, 1, "2000-02-29")],
    3: [(822109, 2, "2004-12-31"), (6, 5, "1999-11-11")],
}
PROBE = "1:\n822109\n3:\n6\n822109\n"
QUALIFYING = "2:\n822109,2005-12-01\n3:\n2059652,2004-02-29\n1488844,2003-01-15\n"


def netflix(tmp_path, movies=MOVIES, probe=PROBE, qualifying=QUALIFYING):
    for movie, rows in movies.items():
        body = "".join(f"{c},{r},{d}\n" for c, r, d in rows)
        write(tmp_path, f"netflix/training_set/mv_{movie:07d}.txt", f"{movie}:\n{body}")
    write(tmp_path, "netflix/probe.txt", probe)
    write(tmp_path, "netflix/qualifying.txt", qualifying)
    return tmp_path / "netflix"


def test_netflix_training_set(tmp_path):
    netflix(tmp_path)
    r = datasets.load("netflix", data_dir=tmp_path, check_counts=False)
    rows = [(c, m, r_, day(d)) for m, lines in MOVIES.items() for c, r_, d in lines]
    df = r.to_pandas()
    assert list(df.itertuples(index=False, name=None)) == [(c, m, float(v), t) for c, m, v, t in rows]
    assert r.user_map.ids().tolist() == [6, 822109, 885013, 1488844, 2059652]
    assert r.rating_scale == (1.0, 5.0)
    with pytest.raises(DataError, match="7 ratings, 5 users, 3 items, but the published netflix"):
        datasets.load("netflix", data_dir=tmp_path)


def test_netflix_probe_is_a_predefined_split(tmp_path):
    netflix(tmp_path)
    train, test = splits.predefined("netflix", "probe", data_dir=tmp_path, check_counts=False)
    assert train.same_index_space(test)
    got = test.to_pandas()
    assert list(zip(got["user"], got["item"], got["rating"])) == [(822109, 1, 5.0), (6, 3, 5.0), (822109, 3, 2.0)]
    assert train.nnz == 4 and not np.isin(train.keys, test.keys).any()
    with pytest.raises(DataError, match="published netflix file has 100,480,507 ratings"):
        splits.predefined("netflix", "probe", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown Netflix split 'quiz'"):
        splits.predefined("netflix", "quiz", data_dir=tmp_path)


def test_netflix_probe_pair_not_in_training(tmp_path):
    root = netflix(tmp_path, probe=PROBE + "2:\n822109\n")
    with pytest.raises(ParseError, match=r"\(customer 822109, movie 2\) is not among") as info:
        splits.predefined("netflix", "probe", data_dir=tmp_path, check_counts=False)
    assert (info.value.path, info.value.line) == (str(root / "probe.txt"), 7)


def test_netflix_qualifying_pairs(tmp_path):
    netflix(tmp_path)
    r = datasets.load("netflix", data_dir=tmp_path, check_counts=False)
    q = datasets.load_netflix_qualifying(r, tmp_path)
    assert r.user_map.ids(q["users"]).tolist() == [822109, 2059652, 1488844]
    assert r.item_map.ids(q["items"]).tolist() == [2, 3, 3]
    assert q["timestamps"].tolist() == [day("2005-12-01"), day("2004-02-29"), day("2003-01-15")]


@pytest.mark.parametrize(
    "movie, text, line, message",
    [
        (2, "2:\n2059652,4,2005-09-05\n1488844,1,2001-02-29\n", 3, "date 2001-02-29 does not exist"),
        (2, "2:\n2059652,4,2005-13-05\n", 2, "date 2005-13-05 does not exist"),
        (2, "2:\n2059652,4,2005-09-05\n1488844,1,2005-0x-02\n", 3, "month '0x' is not an integer"),
        (2, "2:\n2059652,4,2005-09-05\n1488844,6,2005-01-02\n", 3, r"rating 6.0 is outside the scale \[1.0, 5.0\]"),
        (2, "2:\n2059652,4,2005-09-05\n14888", 3, "missing rating field"),  # truncated last line
        (2, "2:\n2059652,4,2005-09-05\n1488844,1,2005-01", 3, "missing day field"),  # truncated last line
        (2, "2:\n", 2, "truncated"),
        (2, "7:\n2059652,4,2005-09-05\n", 1, "MovieID 7 differs from the file name's 2"),
        (2, "Movie 2\n2059652,4,2005-09-05\n", 1, "expected a 'MovieID:' line"),
    ],
)
def test_malformed_netflix_files(tmp_path, movie, text, line, message):
    root = netflix(tmp_path)
    path = write(tmp_path, f"netflix/training_set/mv_{movie:07d}.txt", text)
    with pytest.raises(ParseError, match=message) as info:
        datasets.load("netflix", data_dir=tmp_path, check_counts=False)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert root.is_dir()


def test_netflix_duplicates_across_lines(tmp_path):
    movies = dict(MOVIES)
    movies[3] = MOVIES[3] + [(822109, 4, "2005-01-01")]
    netflix(tmp_path, movies=movies)
    with pytest.raises(ParseError, match=r"mv_0000003.txt:4: duplicate \(user 822109, item 3\) pair, first at "
                                         r".*mv_0000003.txt:2"):
        datasets.load("netflix", data_dir=tmp_path, check_counts=False)
    merged = datasets.load_netflix(tmp_path / "netflix/training_set", duplicates="mean")
    assert merged.nnz == 7 and merged.values[5] == 3.0


@pytest.mark.parametrize(
    "probe, line, message",
    [
        ("822109\n1:\n", 1, "expected a 'MovieID:' line"),
        ("1:\n822109\n\n3:\n6\n", 3, "blank line"),
        ("1:\n8221x9\n", 2, "user ID '8221x9' is not an integer"),
    ],
)
def test_malformed_probe(tmp_path, probe, line, message):
    root = netflix(tmp_path, probe=probe)
    with pytest.raises(ParseError, match=message) as info:
        splits.predefined("netflix", "probe", data_dir=tmp_path, check_counts=False)
    assert (info.value.path, info.value.line) == (str(root / "probe.txt"), line)


def test_malformed_qualifying(tmp_path):
    root = netflix(tmp_path, qualifying="2:\n822109,2005-12-01\n3:\n2059652,2004-02-30\n")
    r = datasets.load("netflix", data_dir=tmp_path, check_counts=False)
    with pytest.raises(ParseError, match="date 2004-02-30 does not exist") as info:
        datasets.load_netflix_qualifying(r, tmp_path)
    assert (info.value.path, info.value.line) == (str(root / "qualifying.txt"), 4)
    write(tmp_path, "netflix/qualifying.txt", "2:\n999,2005-12-01\n")
    with pytest.raises(ParseError, match="customer 999 or movie 2 is not in the training set"):
        datasets.load_netflix_qualifying(r, tmp_path)


def test_netflix_is_never_downloaded(tmp_path):
    with pytest.raises(DataNotFoundError, match="bayesmf does not download netflix") as info:
        datasets.load("netflix", data_dir=tmp_path)
    assert str(tmp_path / "netflix" / "training_set") in str(info.value)
