"""Every loader on small fixture files written in the official formats, and on the real data."""

import gzip

import numpy as np
import pandas as pd
import pytest

from bayesmf import DataError, DataNotFoundError, ParseError, datasets, splits

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t302\t5\t881251000\n"
RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
RATINGS_CSV = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,1445714835\n"


def write(tmp_path, rel, text):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_movielens_100k_format(tmp_path):
    write(tmp_path, "ml-100k/u.data", U_DATA)
    r = datasets.load("movielens-100k", data_dir=tmp_path, download=False, check_counts=False)
    assert (r.nnz, r.n_users, r.n_items) == (4, 3, 3)
    assert r.user_map.ids().tolist() == [22, 186, 196]
    df = r.to_pandas()
    assert df.iloc[0].tolist() == [196, 242, 3.0, 881250949]  # file order kept
    assert r.rating_scale == (1.0, 5.0)


def test_movielens_1m_dat_and_env_var(tmp_path, monkeypatch):
    write(tmp_path, "ml-1m/ratings.dat", RATINGS_DAT)
    monkeypatch.setenv("BAYESMF_DATA", str(tmp_path))
    r = datasets.load("movielens-1m", download=False, check_counts=False)
    assert r.to_pandas()["item"].tolist() == [1193, 661, 1193]
    assert r.timestamps.tolist() == [978300760, 978302109, 978298413]


def test_movielens_1m_npz_keeps_unknown_timestamps(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    np.savez(tmp_path / "ml-1m/ml-1m_ratings.npz", user=np.array([1, 1, 2], np.int32),
             item=np.array([5, 6, 5], np.int32), rating=np.array([5, 3, 4], np.int8),
             timestamp=np.array([100, -1, 50], np.int32))
    r = datasets.load("movielens-1m", data_dir=tmp_path, download=False, check_counts=False)
    assert r.missing_timestamps == 1
    with pytest.raises(DataError, match="1 of 3 ratings have an unknown timestamp"):
        splits.temporal(r, 0.3)
    with pytest.raises(DataError, match="unknown timestamp"):
        splits.leave_one_out(r)


def test_latest_small_csv(tmp_path):
    write(tmp_path, "ml-latest-small/ratings.csv", RATINGS_CSV)
    r = datasets.load("movielens-latest-small", data_dir=tmp_path, download=False, check_counts=False)
    np.testing.assert_array_equal(r.values, [4.0, 4.5, 2.5])
    assert r.rating_scale == (0.5, 5.0)


def test_generic_csv_tsv_gz_parquet_and_string_ids(tmp_path):
    csv = write(tmp_path, "x.csv", "who,what,stars\nann,apple,2\nbob,pear,5\n")
    r = datasets.load_file(csv, columns={"user": "who", "item": "what", "rating": "stars"})
    assert r.user_map.ids().tolist() == ["ann", "bob"]
    tsv = write(tmp_path, "x.tsv", "7\t8\t1\n9\t8\t2\n")
    assert datasets.load_file(tsv, columns={"user": 0, "item": 1, "rating": 2}).nnz == 2
    gz = tmp_path / "ratings.dat.gz"
    gz.write_bytes(gzip.compress(RATINGS_DAT.encode()))
    assert datasets.load_file(gz, sep="::", columns={"user": 0, "item": 1, "rating": 2}).nnz == 3
    pq = tmp_path / "x.parquet"
    pd.DataFrame({"u": [1, 2], "i": [3, 3], "r": [1.0, 2.0]}).to_parquet(pq)
    r = datasets.load_file(pq, columns={"user": "u", "item": "i", "rating": "r"})
    assert r.nnz == 2
    implicit = datasets.load_file(tsv, columns={"user": 0, "item": 1})
    np.testing.assert_array_equal(implicit.values, [1, 1])


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("1\t2\t3\t4\n1\t3\tfive\t5\n", 2, "rating 'five' is not a number"),
        ("1\t2\t3\t4\n1\t3\t4\n", 2, "missing timestamp"),
        ("1\t2\t3\t4\n\n1\t4\t3\t4\n", 2, "missing"),
        ("1\t2\t3\t4\n1\t3\t4\t5\t6\n", 2, "expected 4 fields, found 5"),
        ("1\t2\t3\t4\n2\t2\t3\t4.5\n", 2, "timestamp '4.5' is not an integer"),
    ],
)
def test_malformed_lines_report_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, "ml-100k/u.data", text)
    with pytest.raises(ParseError, match=message) as info:
        datasets.load_file(path)
    assert info.value.line == line and info.value.path == str(path)
    assert f"u.data:{line}:" in str(info.value)


def test_out_of_scale_and_duplicates_in_files(tmp_path):
    path = write(tmp_path, "ml-100k/u.data", "1\t2\t6\t4\n")
    with pytest.raises(ParseError, match=r"u.data:1: rating 6.0 is outside the scale \[1.0, 5.0\]"):
        datasets.load("movielens-100k", data_dir=tmp_path, download=False)
    path.write_text("1\t2\t3\t4\n1\t2\t4\t5\n")
    with pytest.raises(ParseError, match="u.data:2: duplicate .* first at .*u.data:1"):
        datasets.load_file(path)
    assert datasets.load_file(path, duplicates="last").values.tolist() == [4.0]


def test_unknown_columns_and_formats(tmp_path):
    csv = write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ParseError, match=r"header lacks column\(s\) \['stars'\]"):
        datasets.load_file(csv, columns={"user": "a", "item": "b", "rating": "stars"})
    with pytest.raises(DataError, match="unknown format"):
        datasets.load_file(csv)
    with pytest.raises(DataError, match="unknown column role"):
        datasets.load_file(csv, columns={"user": "a", "item": "b", "score": "c"})
    with pytest.raises(DataError, match="unknown data set 'netflix-2'"):
        datasets.load("netflix-2")
    empty = write(tmp_path, "empty.tsv", "")
    with pytest.raises(ParseError, match="empty"):
        datasets.load_file(empty, columns={"user": 0, "item": 1})


def test_missing_data_names_the_expected_path(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        datasets.load("movielens-100k", data_dir=tmp_path, download=False)
    assert str(tmp_path / "ml-100k" / "u.data") in str(info.value)
    assert "BAYESMF_DATA" in str(info.value)


def test_predefined_split_from_fixture_files(tmp_path):
    write(tmp_path, "ml-100k/u.data", U_DATA)
    write(tmp_path, "ml-100k/u1.base", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881251000\n")
    write(tmp_path, "ml-100k/u1.test", "22\t377\t1\t878887116\n")
    train, test = split = splits.predefined("movielens-100k", "u1", data_dir=tmp_path, check_counts=False)
    assert train.same_index_space(test) and train.shape == (3, 3)
    assert split.unseen_users.tolist() == [0] and split.unseen_items.tolist() == [2]
    with pytest.raises(DataError, match="the test set empty"):
        splits.predefined("movielens-100k", "u1", data_dir=tmp_path, drop_unseen=True, check_counts=False)
    with pytest.raises(DataError, match="unknown MovieLens-100K fold 'u9'"):
        splits.predefined("movielens-100k", "u9", data_dir=tmp_path)


# -- the real shared data ------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize(
    "name, counts",
    [("movielens-100k", (100_000, 943, 1_682)), ("movielens-1m", (1_000_209, 6_040, 3_706)),
     ("movielens-latest-small", (100_836, 610, 9_724))],
)
def test_real_data_counts(data_dir, name, counts):
    r = datasets.load(name, data_dir=data_dir, download=False)
    assert (r.nnz, r.n_users, r.n_items) == counts


@pytest.mark.realdata
def test_real_100k_predefined_folds_partition_u_data(data_dir):
    full = datasets.load("movielens-100k", data_dir=data_dir)
    tests = [splits.predefined("movielens-100k", f"u{k}", data_dir=data_dir).test for k in range(1, 6)]
    keys = np.concatenate([t.keys for t in tests])
    assert keys.size == 100_000 and np.array_equal(np.sort(keys), full.sorted_keys)
    train, test = splits.predefined("movielens-100k", "ua", data_dir=data_dir)
    assert (train.nnz, test.nnz) == (90_570, 9_430)
    assert np.all(test.user_counts[test.user_counts > 0] == 10)  # ua: 10 test ratings per user
