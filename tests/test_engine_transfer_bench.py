"""The pure helpers of benchmarks/engine_transfer.py (the benchmark itself is run by hand)."""
from __future__ import annotations

import pytest
from bench_support import load_benchmark

from labkit.data import toy
from labkit.errors import DataError


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("engine_transfer")


def test_train_engines_exist_and_complement_is_the_rest(bench):
    other = bench.complementary_engines(bench.TRAIN_ENGINES)
    assert set(other) == set(toy.STEMS)
    for stem, names in bench.TRAIN_ENGINES.items():
        assert set(names) <= set(toy.ENGINES[stem])
        assert not set(names) & set(other[stem])
        assert sorted([*names, *other[stem]]) == sorted(toy.ENGINES[stem])
        # in toy.ENGINES order, so the test split's engine rotation is reproducible
        assert other[stem] == [e for e in toy.ENGINES[stem] if e in other[stem]]


def test_complement_of_one_engine(bench):
    first, *rest = toy.ENGINES["vocals"]
    assert bench.complementary_engines({"vocals": [first]}) == {"vocals": rest}


def test_complement_rejects_full_and_unknown(bench):
    with pytest.raises(ValueError, match="cover all of toy.ENGINES\\['bass'\\]"):
        bench.complementary_engines({"bass": list(toy.ENGINES["bass"])})
    with pytest.raises(DataError, match="'theremin'"):
        bench.complementary_engines({"vocals": ["theremin"]})


def _result(median: dict, per_track: dict) -> dict:
    return {"median": median, "per_track": per_track}


def test_transfer_summary_known_numbers(bench):
    same = {
        "Spec U-Net": _result({"vocals": 6.0, "accompaniment": 9.0},
                              {"t0": {"vocals": 5.0, "accompaniment": 9.0},
                               "t1": {"vocals": 7.0, "accompaniment": 9.0}}),
        "IRM2 oracle": _result({"vocals": 12.0, "accompaniment": 15.0}, {}),
    }
    other = {
        "Spec U-Net": _result({"vocals": 2.0, "accompaniment": -1.0},
                              {"t0": {"vocals": 4.0, "accompaniment": 8.0},
                               "t1": {"vocals": 0.0, "accompaniment": 10.0},
                               "t2": {"vocals": -9.0, "accompaniment": 0.0}}),
        "IRM2 oracle": _result({"vocals": 10.0, "accompaniment": 0.0}, {}),
    }
    summary = bench.transfer_summary(same, other)
    vocals = summary["vocals"]
    assert vocals["gap_db"] == 4.0
    assert vocals["oracle_gap_db"] == 2.0
    assert vocals["paired_gap_db"] == 4.0  # t0: 1, t1: 7 (t2 is in one split only)
    assert vocals["fraction_of_oracle_same"] == 0.5
    assert vocals["fraction_of_oracle_other"] == 0.2
    assert vocals["fraction_gap"] == 0.3
    accompaniment = summary["accompaniment"]
    assert accompaniment["gap_db"] == 10.0
    assert accompaniment["paired_gap_db"] == 0.0  # t0: 1, t1: -1
    # an oracle at 0 dB gives no meaningful share of it
    assert accompaniment["fraction_of_oracle_same"] == 0.6
    assert accompaniment["fraction_of_oracle_other"] is None
    assert accompaniment["fraction_gap"] is None
    table = bench.transfer_table(summary)
    assert "| transfer gap, same - other (dB) | 4.00 | 10.00 |" in table
    assert "| model / oracle, other engines | 0.20 | – |" in table


def test_by_vocal_engine_groups_tracks(bench):
    result = _result({}, {"a": {"vocals": 1.0}, "b": {"vocals": 3.0}, "c": {"vocals": 7.0}})
    grouped = bench.by_vocal_engine(result, {"a": "fof", "b": "fof", "c": "talkbox"})
    assert grouped == {"fof": {"tracks": 2, "vocals": 2.0},
                       "talkbox": {"tracks": 1, "vocals": 7.0}}
