"""The one option bag: checked when made, stored with every row, read back by rerun."""
from __future__ import annotations

import dataclasses

import pytest

from kpbench.errors import KPBenchError
from kpbench.bench.settings import MEASURE_KEYS, RUN_KEYS, WORKER_FIELDS, Settings, split_measure


def test_settings_are_checked_when_made_naming_the_field():
    with pytest.raises(KPBenchError, match="executor = 'bogus'.*choose from ray, inline"):
        Settings(executor="bogus")
    with pytest.raises(KPBenchError, match="repeats must be whole numbers from 1"):
        Settings(repeats=0)
    with pytest.raises(KPBenchError, match="cpus_per_point must be a fraction"):
        Settings(cpus_per_point=1.5)


def test_the_threads_default_is_one_per_cpu_asked_of_ray():
    assert Settings().point_threads() == 1
    assert Settings(cpus_per_point=4).point_threads() == 4
    assert Settings(cpus_per_point=0.5).point_threads() == 1
    assert Settings(threads=3, cpus_per_point=4).point_threads() == 3


def test_the_stored_settings_read_back_as_the_settings_measured_with():
    ran = Settings(repeats=7, warmup=2, threads=3, cpus_per_point=3, timeout_s=30.0, memory_budget=2**20)
    for kind in ("speed", "memory"):
        stored = ran.row_meta(kind)
        assert ("repeats" in stored) is (kind == "speed")   # the other kinds' rows store their own
        back = Settings.from_row_meta(stored, executor="inline", out="elsewhere")
        expected = ran.replace(executor="inline", out="elsewhere",
                               **({} if kind == "speed" else {"repeats": 1}))
        assert back == expected


def test_the_keys_split_into_axes_measurement_and_run():
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(MEASURE_KEYS) | set(RUN_KEYS) | {"min_sample_s", "plugins"} == names
    assert not set(MEASURE_KEYS) & set(RUN_KEYS)
    # an interleaved variant's worker (of any kpbench) takes exactly MeasureSettings' fields
    assert set(Settings().measurement()) == set(WORKER_FIELDS)
    assert split_measure({"N": [1], "repeats": 3}) == ({"N": [1]}, {"repeats": 3})
