"""Programs as objectives (issue 17): real programs, outside the package, run as subprocesses.

A shell script and a Python script stand in for a compiled simulation and a training script.
"""

from __future__ import annotations


# ---------------------------------------------------------------------------- the manager API
def test_command_loop_runs_a_program_per_queued_task(rush, programs, monkeypatch):
    from rushhpc import command_loop

    monkeypatch.chdir(programs)
    rush.start_local_workers(command_loop, n_workers=2, command="./sim -T {T} --out {trial_dir}",
                             result="result.json", timeout=60, stop_when_empty=False)
    keys = rush.push_tasks([{"T": t} for t in (250, 300, 350)] + [{"X": 1}])
    rush.wait_for_tasks(keys, timeout=60)
    done = rush.fetch_finished_tasks()
    assert sorted(done["energy"]) == [250, 300, 350] and set(done["cwd"]) == {str(programs)}
    assert all((programs / "trials" / k / "stdout.txt").exists() for k in done["keys"])
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "have no 'T' for the placeholder {T}" in failed["condition"].iloc[0]
    rush.stop_workers(type="kill")
