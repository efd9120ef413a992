"""One duration rule everywhere: a launcher's walltime, a sweep's budget and timeouts read a value alike."""

from __future__ import annotations

import pytest

from rushhpc.core.durations import DurationError, parse_duration
from rushhpc.errors import RushConfigError
from rushhpc.launchers import batch
from rushhpc.sweeps import config as sweep_config

FORMS = {90: 90, 90.5: 90.5, "90s": 90, "10m": 600, "10min": 600, "1h30m": 5400, "1.5h": 5400, "2d": 172800,
         "10:00": 600, "01:30:00": 5400, "1-02": 93600, "1-02:30": 95400, "1-00:00:10": 86410, " 1h 30m ": 5400}


@pytest.mark.parametrize("text,seconds", list(FORMS.items()))
def test_every_interface_reads_a_duration_alike(text, seconds):
    # the defect: "90" was 90 minutes in launchers/batch.py and 90 seconds in sweeps/config.py
    assert parse_duration(text) == seconds
    assert sweep_config.parse_duration(text) == seconds
    assert batch.parse_duration(text) == pytest.approx(seconds, abs=1)  # whole seconds, rounded up


def test_a_bare_number_in_a_string_is_refused_with_both_spellings():
    with pytest.raises(DurationError, match=r"write 90s for seconds or 90m for minutes"):
        parse_duration("90")
    with pytest.raises(RushConfigError, match=r"time/walltime: '90' has no unit: write 90s .* or 90m"):
        batch.parse_duration("90")


@pytest.mark.parametrize("bad", ["soon", "", "1x", -1, True, "1:2:3:4", float("inf"), "1-", "h"])
def test_what_is_not_a_duration_is_refused(bad):
    with pytest.raises(DurationError):
        parse_duration(bad)


def test_a_sweep_names_the_yaml_key_of_a_bad_duration(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("objective: m:f\nspace: {x: {type: float, low: 0, high: 1}}\nbudget: {walltime: '90'}\n")
    with pytest.raises(sweep_config.SweepConfigError, match=r"budget\.walltime: '90' has no unit: write 90s"):
        sweep_config.load_config(f)
