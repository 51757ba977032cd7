import numpy as np
import pytest

from bayesmf import DataError, IdMap


def test_from_ids_is_sorted_and_independent_of_row_order():
    a = IdMap.from_ids([30, 10, 20, 10])
    b = IdMap.from_ids([10, 20, 30])
    assert a == b
    np.testing.assert_array_equal(a.lookup([10, 20, 30]), [0, 1, 2])
    np.testing.assert_array_equal(a.ids([2, 0]), [30, 10])


def test_extend_keeps_existing_indices_and_appends_in_first_appearance_order():
    m = IdMap.from_ids(["b", "a"])
    grown = m.extend(["c", "a", "z", "c", "y"])
    assert len(grown) == 5
    np.testing.assert_array_equal(grown.lookup(["a", "b"]), m.lookup(["a", "b"]))
    np.testing.assert_array_equal(grown.lookup(["c", "z", "y"]), [2, 3, 4])
    assert m.extend(["a"]) is m
    assert len(m) == 2  # immutable: the original did not grow


def test_unknown_ids_raise_or_map_to_minus_one():
    m = IdMap.from_ids([1, 2, 3])
    with pytest.raises(DataError, match="unknown ID 7"):
        m.lookup([1, 7])
    np.testing.assert_array_equal(m.lookup([1, 7, 3], missing=-1), [0, -1, 2])
    assert 2 in m and 9 not in m


def test_string_and_int_ids_do_not_mix():
    with pytest.raises(DataError, match="string IDs"):
        IdMap.from_ids(["u1"]).lookup([1])


def test_duplicates_in_ordered_map_rejected():
    with pytest.raises(DataError, match="repeats"):
        IdMap.from_ordered([5, 6, 5])


def test_index_out_of_range_is_named():
    with pytest.raises(DataError, match="index 3 out of range"):
        IdMap.from_ids([1, 2]).ids([3])


@pytest.mark.parametrize("ids", [[3, 1, 2], ["x", "y", "é"]])
def test_save_load_roundtrip(tmp_path, ids):
    m = IdMap.from_ordered(ids).extend([ids[0], "new" if isinstance(ids[0], str) else 99])
    m.save(tmp_path / "m.json")
    back = IdMap.load(tmp_path / "m.json")
    assert back == m
    np.testing.assert_array_equal(back.lookup(m.ids()), np.arange(len(m)))


def test_load_rejects_other_format_version(tmp_path):
    (tmp_path / "m.json").write_text('{"format_version": 99, "kind": "int", "ids": [1]}')
    with pytest.raises(DataError, match="format version 99"):
        IdMap.load(tmp_path / "m.json")


def test_large_lookup_is_vectorised_and_exact():
    rng = np.random.default_rng(0)
    raw = rng.choice(10**9, 50_000, replace=False)
    m = IdMap.from_ordered(raw)
    q = rng.integers(0, raw.size, 200_000)
    np.testing.assert_array_equal(m.lookup(raw[q]), q)
