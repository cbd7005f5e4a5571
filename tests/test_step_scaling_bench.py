"""benchmarks/step_scaling.py: its report table and one tiny job (the benchmark itself runs on a
GPU by hand)."""
from __future__ import annotations

import pytest
from bench_support import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("step_scaling")


def point(step, headline, end=False):
    return {"step": step, "headline": headline, "end_of_run": end}


def test_report_puts_each_step_in_its_column_and_the_last_step_apart(bench):
    results = {"jobs": {
        "a": {"parameters": 1000, "train_songs": 32, "oracle_headline": 10.0,
              "points": [point(2, 1.0), point(4, 2.0), point(7, 3.0, end=True)]},
        "b": {"parameters": 5, "train_songs": 160, "oracle_headline": 8.0,
              "points": [point(2, 4.0)]},
    }}
    lines = bench.report(results).splitlines()
    assert lines[0] == "| job | parameters | train songs | oracle | 2 steps | 4 steps | end of run |"
    assert lines[2] == "| a | 1,000 | 32 | 10.00 | 1.00 (0.10x) | 2.00 (0.20x) | 3.00 (0.30x) at 7 |"
    assert lines[3] == "| b | 5 | 160 | 8.00 | 4.00 (0.50x) |  |  |"


@pytest.mark.slow
def test_a_tiny_job_scores_at_the_asked_steps_and_at_its_end(bench, tmp_path):
    record = bench.run_job("spec-recipe", [2, 4], minutes=5.0, fast=True, workdir=tmp_path,
                           workers=1)
    assert [p["step"] for p in record["points"]] == [2, 4]  # the run ends at the last one
    assert record["steps_trained"] == 4 and record["stopped_by"] == "max_steps"
    assert record["oracle"]["vocals"] > record["points"][-1]["sdr"]["vocals"]
    assert record["oracle_headline"] == record["oracle"]["vocals"]
