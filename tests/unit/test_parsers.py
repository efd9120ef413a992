"""Scheduler output parsers (recorded PBS Pro outputs, SLURM strings) and the reconciliation rules."""

from __future__ import annotations

import json
import os

import pytest
from support import PBS_EMULATOR

from rushhpc.launchers.base import JobStatus
from rushhpc.launchers.batch import hms, parse_duration
from rushhpc.launchers.pbs.states import exit_reason, parse_exit_statuses, parse_table, short_id
from rushhpc.launchers.slurm.states import expand_ids, parse_sacct, parse_scontrol, parse_squeue, status_from
from rushhpc.manager.reconcile import decide

RECORDED = PBS_EMULATOR / "recorded"


def test_pbs_table():
    states = parse_table((RECORDED / "qstat_xt_array_table.txt").read_text())
    assert states["4711"] == "F" and states["4714"] == "H" and states["4715[]"] == "B"
    assert states["4715[0]"] == "X" and states["4715[2]"] == "R"
    wide = parse_table((RECORDED / "qstat_xw_wide_table.txt").read_text())
    assert wide and all("*" not in k for k in wide)


def test_pbs_json_valid_and_invalid():
    codes = parse_exit_statuses((RECORDED / "qstat_xtf_json_array_finished.json").read_text())
    assert codes["4715[]"] == 1 and codes["4715[0]"] == 0 and codes["4715[3]"] == 271
    for name in ("qstat_f_json_invalid_2022.txt", "qstat_f_json_invalid_legacy.txt"):
        text = (RECORDED / name).read_text()
        with pytest.raises(ValueError):
            json.loads(text)
        got = parse_exit_statuses(text)
        assert got, name  # the jobs are still read
    cjson = parse_exit_statuses((RECORDED / "qstat_xf_json_cjson_23.06.json").read_text())
    assert 0 in cjson.values()


@pytest.mark.parametrize("code,reason", [(0, "completed"), (3, "failed"), (271, "cancelled"), (265, "cancelled"),
                                         (143, "cancelled"), (-29, "timeout"), (-1, "failed_to_start"),
                                         (None, "cancelled")])
def test_pbs_exit_reason(code, reason):
    assert exit_reason(code) == reason


def test_pbs_short_id():
    assert short_id("123[4].pbs01.example.org") == "123[4]" and short_id("99.pbsemu") == "99"


@pytest.mark.parametrize("raw,state,reason", [
    ("PENDING", "pending", ""), ("RUNNING", "running", ""), ("SUSPENDED", "suspended", ""),
    ("COMPLETING", "finishing", ""), ("CANCELLED by 0", "finished", "cancelled"), ("TIMEOUT", "finished", "timeout"),
    ("OUT_OF_MEMORY", "finished", "out_of_memory"), ("NODE_FAIL", "finished", "node_fail"),
    ("PREEMPTED", "finished", "preempted"), ("REQUEUE_HOLD", "held", ""), ("CONFIGURING", "starting", ""),
])
def test_slurm_states(raw, state, reason):
    st = status_from(raw)
    assert (st.state, st.reason) == (state, reason)


def test_slurm_held_reason_and_exit_codes():
    assert status_from("PENDING", "JobHeldUser").state == "held"
    assert status_from("COMPLETED", exit_code="0:0").reason == "completed"
    assert status_from("COMPLETED", exit_code="2:0").reason == "failed"


def test_slurm_parsers():
    assert expand_ids("12_[0-2,5]") == ["12_0", "12_1", "12_2", "12_5"] and expand_ids("12_3") == ["12_3"]
    q = parse_squeue("12_0|RUNNING|None\n12_[1-2]|PENDING|JobHeldUser\n")
    assert q["12_0"].state == "running" and q["12_2"].state == "held"
    a = parse_sacct("12_0|CANCELLED by 0|0:15|None\n13|NODE_FAIL|0:0|None\n")
    assert a["12_0"].reason == "cancelled" and a["13"].reason == "node_fail"
    c = parse_scontrol("JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=x JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15\n")
    assert c["12_1"].reason == "timeout"


def test_durations():
    assert parse_duration("90m") == 5400 and parse_duration("01:30:00") == 5400 and parse_duration("2-00") == 172800
    assert parse_duration("10:00") == 600 and parse_duration(42) == 42 and hms(93600) == "26:00:00"


RUN = JobStatus("running")
ENDED = lambda reason, raw="X": JobStatus("finished", reason=reason, raw=raw)  # noqa: E731


def test_rules_unregistered():
    assert not decide("w", {}, None, False, JobStatus("pending"), 0, 60, 10).lost_reason
    d = decide("w", {}, None, False, RUN, 100, 60, 10)
    assert not d.lost_reason and d.track["running_since"] == 100
    d = decide("w", {"running_since": 100}, None, False, RUN, 200, 60, 10)
    assert d.lost_reason == "failed_to_start" and d.cancel_job
    assert decide("w", {}, None, False, ENDED("completed"), 0, 60, 10).lost_reason == "failed_to_start"
    assert decide("w", {}, None, False, ENDED("out_of_memory"), 0, 60, 10).lost_reason == "out_of_memory"


def test_rules_registered():
    w = {"state": "running"}
    assert not decide("w", {}, w, True, RUN, 0, 60, 10).lost_reason
    # issue 20, defect 9: an ended job decides, whatever the heartbeat key still says (test_rules_ended_job_decides)
    assert decide("w", {}, w, True, ENDED("node_fail"), 0, 60, 10).lost_reason == "node_fail"
    d = decide("w", {}, w, False, RUN, 0, 60, 10)
    assert d.lost_reason == "heartbeat_expired" and d.cancel_job
    assert not decide("w", {}, w, False, JobStatus("suspended"), 0, 60, 10).lost_reason
    assert not decide("w", {}, w, False, JobStatus("finishing"), 0, 60, 10).lost_reason
    assert decide("w", {}, w, False, ENDED("timeout"), 0, 60, 10).lost_reason == "timeout"
    oom = decide("w", {}, w, False, ENDED("out_of_memory"), 0, 60, 10)
    assert oom.lost_reason == "out_of_memory" and "ran out of memory" in oom.message  # the tasks' condition


@pytest.mark.parametrize("reason", ["cancelled", "timeout", "failed", "out_of_memory", "node_fail", "completed",
                                    "preempted"])
@pytest.mark.parametrize("alive", [True, False])
def test_rules_ended_job_decides(reason, alive):
    # issue 20, defect 9: a job the scheduler reports ended means its worker is not running, whatever its
    # heartbeat key still says (it outlives a worker killed before it could mark itself), with the
    # scheduler's reason, at once, and its fate is settled; a worker still beating is sent a kill request
    d = decide("w", {}, {"state": "running"}, alive, ENDED(reason, raw=reason.upper()), 0, 60, 10)
    assert d.lost_reason == reason and d.done and not d.cancel_job
    assert d.kill_worker is alive
    assert d.lost_reason != "vanished"  # the scheduler knows the job: not vanished


def test_rules_requeued_job_decides_over_a_heartbeat():
    # issue 20, defect 9 (PREEMPTED with its requeue rule): a registered worker whose job is queued again
    # was stopped by the requeue; lost(preempted) at once, so that the rerun can register under its id,
    # and no kill request (the rerun's heartbeat would take it)
    for alive in (True, False):
        for state in ("pending", "held"):
            d = decide("w", {}, {"state": "running"}, alive, JobStatus(state), 0, 60, 10)
            assert d.lost_reason == "preempted" and not d.kill_worker and not d.done
    # running, suspended, finishing with a live heartbeat: alive
    for state in ("running", "starting", "suspended", "finishing"):
        assert not decide("w", {}, {"state": "running"}, True, JobStatus(state), 0, 60, 10).lost_reason


def test_rules_vanished_and_refined():
    w = {"state": "running"}
    d1 = decide("w", {}, w, False, None, 0, 60, 10, vanish_grace=5)
    assert not d1.lost_reason and d1.track["misses"] == 1
    d2 = decide("w", d1.track, w, False, None, 3, 60, 10, vanish_grace=5)
    assert not d2.lost_reason  # two misses, but not yet long enough
    d3 = decide("w", d2.track, w, False, None, 6, 60, 10, vanish_grace=5)
    assert d3.lost_reason == "vanished"
    # a beating worker is never declared vanished, however long the scheduler does not know its job
    track: dict = {}
    for now in (0, 3, 6, 600):
        d = decide("w", track, w, True, None, now, 60, 10, vanish_grace=5)
        assert not d.lost_reason and not d.done
        track.update(d.track)
    lost = {"state": "lost", "reason": "sigterm"}
    assert decide("w", {}, lost, False, ENDED("cancelled"), 0, 60, 10).refine_reason == "cancelled"
    assert decide("w", {}, {"state": "terminated"}, False, ENDED("completed"), 0, 60, 10).done


def test_scontrol_unsplit_array_record():
    """An array cancelled while pending keeps one record with ArrayTaskId=NO_VAL for all its elements;
    a pending array's record may carry a range."""
    text = ("JobId=76 ArrayJobId=76 ArrayTaskId=4294967294 JobState=CANCELLED Reason=None ExitCode=0:0\n"
            "JobId=80 ArrayJobId=80 ArrayTaskId=1-3 JobState=PENDING Reason=JobHeldUser\n")
    parsed = parse_scontrol(text)
    assert parsed["76_*"].reason == "cancelled"
    assert {k for k in parsed if k.startswith("80_")} == {"80_1", "80_2", "80_3"}
    assert parsed["80_2"].state == "held"


def test_slurm_max_array_size_without_an_answer_is_the_default(tmp_path, monkeypatch):
    # issue 18: without MaxArraySize in `scontrol show config` the launcher fell back to a bare 1001,
    # against defaults.MAX_ARRAY_SIZE; there is one value now
    from rushhpc import defaults
    from rushhpc.launchers.slurm.launcher import SlurmLauncher
    from rushhpc.launchers.slurm.states import parse_max_array_size

    assert parse_max_array_size("MaxArraySize            = 4001\nMaxJobCount = 10000") == 4001
    assert parse_max_array_size("scontrol: error: slurm_load_ctl_conf error") is None
    # a site whose scontrol does not say (a real command on PATH, as the PBS emulator is)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'MaxJobCount = 10000'\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    class Context:
        network_id = "n"
        run_dir = tmp_path

    launcher = SlurmLauncher(Context(), {})  # type: ignore[arg-type]
    assert launcher.max_array_size() == defaults.MAX_ARRAY_SIZE
