"""Side tables (bayesmf.data.side): the MovieLens user and item files parse to the values written
in them, malformed lines fail naming the file and line, and the real files hold the published rows."""

import numpy as np
import pandas as pd
import pytest
from side_fixtures import GENRES, write, write_ml1m, write_ml100k

from bayesmf import datasets
from bayesmf.data.side import (
    SideTable,
    load_ml1m_movies,
    load_ml1m_users,
    load_ml100k_items,
    load_ml100k_users,
    side,
)
from bayesmf.errors import ConfigError, DataError, ParseError


def _levels(table, column):
    """Level of every row of a categorical column, as a list of str."""
    col = table.columns[column]
    return [col.levels[c] for c in col.values]


def _sets(table, column):
    """Set of levels of every row of a multi column."""
    col = table.columns[column]
    return [{col.levels[c] for c in col.values[a:b]} for a, b in zip(col.indptr[:-1], col.indptr[1:])]


def test_ml100k_users_and_items_hold_the_file_values(tmp_path):
    folder = write_ml100k(tmp_path)
    users = load_ml100k_users(folder / "u.user")
    assert users.ids.ids().tolist() == [1, 2, 3, 4] and list(users.columns) == [
        "age", "gender", "occupation", "zip", "zip_prefix"]
    np.testing.assert_array_equal(users.columns["age"].values, [24.0, 53.0, 23.0, 40.0])
    assert _levels(users, "gender") == ["M", "F", "M", "F"]
    assert _levels(users, "occupation") == ["technician", "other", "writer", "other"]
    assert _levels(users, "zip") == ["85711", "94043", "T8H1N", "32067"]
    assert _levels(users, "zip_prefix") == ["8", "9", "T", "3"]

    items = load_ml100k_items(folder / "u.item")
    assert items.ids.ids().tolist() == [1, 2, 3, 4]
    year = items.columns["release_year"].values
    np.testing.assert_array_equal(year[[0, 1, 3]], [1995.0, 1995.0, 1950.0])
    assert np.isnan(year[2])  # empty release date: missing, not an error
    assert _sets(items, "genres") == [{"Comedy"}, {"Action", "Comedy", "Drama"}, {"unknown"}, {"Drama"}]
    assert sorted(items.columns["genres"].levels) == sorted(GENRES)


def test_ml1m_users_and_movies_hold_the_file_values(tmp_path):
    folder = write_ml1m(tmp_path)
    users = load_ml1m_users(folder / "users.dat")
    assert _levels(users, "gender") == ["F", "M", "M"]
    assert _levels(users, "age") == ["Under 18", "56+", "25-34"]
    assert _levels(users, "occupation") == ["K-12 student", "self-employed", "scientist"]
    assert _levels(users, "zip_prefix") == ["4", "7", "5"]
    movies = load_ml1m_movies(folder / "movies.dat")
    np.testing.assert_array_equal(movies.columns["year"].values, [1995.0] * 3)
    assert _sets(movies, "genres") == [{"Animation", "Children's", "Comedy"}, {"Drama", "Musical"},
                                       {"Action", "Crime", "Thriller"}]


@pytest.mark.parametrize("loader, text, line, message", [
    (load_ml100k_users, "1|24|M|technician|85711\n2|53|F|other\n", 2, "expected 5 '\\|'-separated fields, found 4"),
    (load_ml100k_users, "1|24|M|technician|85711\n2|5x|F|other|94043\n", 2, "age '5x' is not an integer"),
    (load_ml100k_users, "1|nan|M|technician|85711\n", 1, "age 'nan' is not an integer"),
    (load_ml100k_users, "1|inf|M|technician|85711\n", 1, "age 'inf' is not an integer"),
    (load_ml100k_users, "1|24|M|a|1\n2|25|F|b|2\n1|26|M|c|3\n", 3, "user ID 1 repeats \\(first on line 1\\)"),
    (load_ml100k_users, "1|24|M|a|1\n\n2|25|F|b|2\n", 2, "found an empty line"),
    (load_ml100k_users, "1|24||a|1\n", 1, "gender is empty"),
    (load_ml1m_users, "1::F::1::10::48067\n2::M::57::16::70072\n", 2, "age code 57 is not one of"),
    (load_ml1m_users, "1::F::1::21::48067\n", 1, "occupation code 21 is outside 0..20"),
    (load_ml1m_users, "1::F::1::10\n", 1, "expected 5 '::'-separated fields, found 4"),
    (load_ml1m_movies, "1::A (1995)::Drama\n1::B (1996)::Comedy\n", 2, "movie ID 1 repeats"),
    (load_ml1m_movies, "x::A (1995)::Drama\n", 1, "movie ID 'x' is not an integer"),
])
def test_malformed_lines_name_file_and_line(tmp_path, loader, text, line, message):
    path = write(tmp_path / "side.txt", text)
    with pytest.raises(ParseError, match=message) as err:
        loader(path)
    assert err.value.line == line and err.value.path == str(path) and f"side.txt:{line}:" in str(err.value)


@pytest.mark.parametrize("row, message", [
    ("2|B (1995)|01-Jan-1995||u|0|1|2|0", "genre flag 'Comedy' is '2', not 0 or 1"),
    ("2|B (1995)|32-Jan-1995||u|0|1|0|0", "release date '32-Jan-1995' is not a date"),
    ("2|B (1995)|01-Jan-1995||u|0|1|0", "expected 9 '\\|'-separated fields, found 8"),
])
def test_malformed_item_lines(tmp_path, row, message):
    folder = write_ml100k(tmp_path, u_item="1|A (1995)|01-Jan-1995||u|0|0|1|0\n" + row + "\n")
    with pytest.raises(ParseError, match=message) as err:
        load_ml100k_items(folder / "u.item")
    assert err.value.line == 2


def test_genre_file_must_number_its_genres_in_order(tmp_path):
    folder = write_ml100k(tmp_path, u_genre="unknown|0\nAction|2\n")
    with pytest.raises(ParseError, match="u.genre:2: genre index 2; expected 1"):
        load_ml100k_items(folder / "u.item")


def test_side_finds_the_data_set_folder_and_checks_counts(tmp_path):
    write_ml100k(tmp_path)
    with pytest.raises(DataError, match=r"u.user: 4 rows, but the published movielens-100k file has 943"):
        datasets.side("ml-100k", tmp_path, download=False)
    users, items = datasets.side("ml-100k", tmp_path, download=False, check_counts=False)
    assert (users.n_rows, items.n_rows) == (4, 4)
    assert users.source == ("movielens-100k", "users") and items.source == ("movielens-100k", "items")
    write_ml1m(tmp_path)
    users, items = side("movielens-1m", tmp_path, download=False, check_counts=False)
    assert (users.n_rows, items.n_rows) == (3, 3) and items.source == ("movielens-1m", "items")
    with pytest.raises(ConfigError, match="no side tables for data set 'ml-10m'"):
        side("ml-10m", tmp_path)


def test_from_pandas_refuses_non_finite_numbers_and_repeated_ids():
    df = pd.DataFrame({"id": ["a", "b", "c"], "age": [20.0, np.nan, 30.0], "job": ["x", "y", "x"],
                       "tags": ["p|q", "", "q"]})
    with pytest.raises(DataError, match=r"column 'age', row 1 \(ID 'b'\): 'nan' is not a finite number"):
        SideTable.from_pandas(df, "id", numeric=["age"])
    with pytest.raises(DataError, match=r"row 1 \(ID 'b'\): 'inf' is not a finite number"):
        SideTable.from_pandas(df.assign(age=[1.0, np.inf, 2.0]), "id", numeric=["age"])
    with pytest.raises(DataError, match="ID 'a' at row 2 repeats \\(first at row 0\\)"):
        SideTable.from_pandas(df.assign(id=["a", "b", "a"]), "id", categorical=["job"])
    with pytest.raises(DataError, match="column 'job' is missing at row 1"):
        SideTable.from_pandas(df.assign(job=["x", None, "y"]), "id", categorical=["job"])
    t = SideTable.from_pandas(df.assign(age=[20, 25, 30]), "id", categorical=["job"], numeric=["age"],
                              multi=["tags"], name="people")
    assert _levels(t, "job") == ["x", "y", "x"] and _sets(t, "tags") == [{"p", "q"}, set(), {"q"}]
    with pytest.raises(DataError, match="side table people has no row for user 'z'"):
        t.rows_of(["a", "z"], what="user")
    assert t.rows_of(["c", "z"], missing="empty").tolist() == [2, -1]


def _plain_fields(path, sep):
    """Each line's fields by plain str.split (the independent reference)."""
    return [line.split(sep) for line in path.read_bytes().decode("latin-1").splitlines() if line]


def test_real_movielens_side_files(data_dir):
    users, items = side("ml-100k", data_dir)
    assert (users.n_rows, items.n_rows) == (943, 1682)
    ref = _plain_fields(data_dir / "ml-100k" / "u.user", "|")
    np.testing.assert_array_equal(users.columns["age"].values, [float(f[1]) for f in ref])
    assert _levels(users, "occupation") == [f[3] for f in ref]
    assert _levels(users, "zip_prefix") == [f[4][0] for f in ref]
    ref = _plain_fields(data_dir / "ml-100k" / "u.item", "|")
    assert [len(s) for s in _sets(items, "genres")] == [sum(x == "1" for x in f[5:]) for f in ref]
    year = items.columns["release_year"].values
    assert np.flatnonzero(np.isnan(year)).tolist() == [k for k, f in enumerate(ref) if f[2] == ""]
    assert items.ids.ids()[np.isnan(year)].tolist() == [267]

    users, items = side("ml-1m", data_dir)
    assert (users.n_rows, items.n_rows) == (6040, 3883)
    ref = _plain_fields(data_dir / "ml-1m" / "movies.dat", "::")
    assert _sets(items, "genres") == [set(f[2].split("|")) for f in ref]
    np.testing.assert_array_equal(items.columns["year"].values, [float(f[1][-5:-1]) for f in ref])
    assert "Misérables, Les (1995)" in [f[1] for f in ref]  # read as latin-1
    ref = _plain_fields(data_dir / "ml-1m" / "users.dat", "::")
    assert _levels(users, "gender") == [f[1] for f in ref]
    assert sorted(set(_levels(users, "age"))) == sorted(["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55",
                                                          "56+"])
