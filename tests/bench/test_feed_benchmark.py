"""The feed benchmark's record and the README's "Can 8 cores feed it" table drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

from feed_benchmark import FEEDS, RESULTS, delivered, feed_capacity, table

ROOT = Path(__file__).resolve().parents[2]


def last_record() -> dict:
    return json.loads(RESULTS.read_text().splitlines()[-1])


def test_the_readme_table_is_the_last_records() -> None:
    assert table(last_record()) in (ROOT / "README.md").read_text()


def test_the_record_holds_every_feed_at_every_worker_count_and_every_method() -> None:
    from micd.methods import METHODS

    record = last_record()
    assert {"host", "cpu"} <= set(record["machine"]) and record["load_average_at_start"]
    for feed in FEEDS:
        assert set(record["feeds"][feed]) == {"0", "1", "2"}
    assert record["flops"] and set(record["flops"]) <= set(METHODS)


def test_capacity_is_the_cores_times_one_cores_rate_capped_by_the_main_process() -> None:
    assert delivered(300.0, 2.0, 3) == 500.0  # capped: the main process takes 2 ms a patch
    assert delivered(100.0, 2.0, 3) == 300.0
    sampler = {"0": {"patches_per_s": 100.0}, "1": {"main_ms_per_patch": 1.0}, "2": {"main_ms_per_patch": 1.25}}
    record = {"feeds": {"uniform": sampler, "class_weighted": {**sampler, "0": {"patches_per_s": 90.0}}}}
    assert feed_capacity(record, 7) == 630.0 and feed_capacity(record, 9) == 800.0
