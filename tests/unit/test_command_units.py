"""Programs as objectives (issue 17): real programs, outside the package, run as subprocesses.

A shell script and a Python script stand in for a compiled simulation and a training script.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from rushhpc.worker.command import (
    CommandSpec,
    CommandSpecError,
    EvaluationTimeout,
    InvalidResult,
    ProgramFailed,
    TrialContext,
    placeholders,
    render_argv,
    run_command,
)


def ctx(programs: Path, n: int = 0) -> TrialContext:
    return TrialContext(trial_dir=programs / "out" / "trials" / str(n), eval=n, seed=11, worker_id="w-1",
                        base_dir=programs)


def pid_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie whose parent has not reaped it yet is gone for our purpose
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_stdout_json_result_env_and_arguments(programs):
    spec = CommandSpec.from_mapping({"command": f"{sys.executable} train.py --lr {{lr}} --layers {{layers}}",
                                     "env": {"OMP_NUM_THREADS": "{layers}"}})
    out = run_command(spec, {"lr": 0.25, "layers": 3}, ctx(programs, 4))
    assert out["loss"] == 0.5 and out["argv"] == ["--lr", "0.25", "--layers", "3"]
    assert out["omp"] == "3" and out["eval"] == "4" and out["params"] == {"lr": 0.25, "layers": 3}
    trial = programs / "out" / "trials" / "4"
    assert (trial / "stdout.txt").read_text().startswith("epoch 1\n") and (trial / "stderr.txt").read_text() == ""


def test_result_file_relative_to_the_trial_folder_and_cwd_forms(programs):
    spec = CommandSpec.from_mapping({"command": "./sim -T {T} --out {trial_dir}", "result": "result.json"})
    out = run_command(spec, {"T": 300}, ctx(programs))
    assert out["energy"] == 300 and out["cwd"] == str(programs)  # runs in the sweep file's folder
    spec = CommandSpec.from_mapping({"command": [str(programs / "sim"), "-T", "{T}", "--out", "."],
                                     "result": "result.json", "cwd": "trial"})
    out = run_command(spec, {"T": 5}, ctx(programs, 1))
    assert out["cwd"] == str(programs / "out" / "trials" / "1")


def test_regex_result_reads_named_groups_of_the_last_match(programs):
    spec = CommandSpec.from_mapping({"command": "./sim -T {T} --out {trial_dir}",
                                     "result": {"regex": r"energy: (?P<energy>\S+) steps: (?P<steps>\d+)"}})
    assert run_command(spec, {"T": 7}, ctx(programs)) == {"energy": 7.5, "steps": 100.0}


def test_non_zero_exit_fails_with_code_and_stderr_tail(programs):
    spec = CommandSpec.from_mapping({"command": [sys.executable, "train.py", "--lr", "{lr}", "--fail", "3"]})
    # the first line (the results' error column) has the code and stderr's last line, the tail follows
    with pytest.raises(ProgramFailed, match=r"exit code 3\): diverged at step 3\nstderr ends with:\ndiverged at step 3"):
        run_command(spec, {"lr": 1}, ctx(programs))
    spec = CommandSpec.from_mapping({"command": "sh -c 'kill -SEGV $$'"})
    with pytest.raises(ProgramFailed, match=r"killed by SIGSEGV"):
        run_command(spec, {}, ctx(programs))
    spec = CommandSpec.from_mapping({"command": "./no-such-program {x}"})
    with pytest.raises(ProgramFailed, match=r"cannot start './no-such-program'"):
        run_command(spec, {"x": 1}, ctx(programs))


def test_unreadable_results_fail_with_invalid_result_naming_what_was_looked_for(programs):
    with pytest.raises(InvalidResult, match=r"no line of stdout is a JSON object or a number"):
        run_command(CommandSpec.from_mapping({"command": "echo hello"}), {}, ctx(programs))
    with pytest.raises(InvalidResult, match=r"did not write its result file missing.json"):
        run_command(CommandSpec.from_mapping({"command": "true", "result": "missing.json"}), {}, ctx(programs))
    with pytest.raises(InvalidResult, match=r"stdout has no match of result.regex"):
        run_command(CommandSpec.from_mapping({"command": "echo x", "result": {"regex": "y=(?P<y>.*)"}}), {}, ctx(programs))


def test_timeout_stops_the_whole_process_group_including_a_forked_child(programs, tmp_path):
    pidfile = tmp_path / "child.pid"
    spec = CommandSpec.from_mapping({"command": [sys.executable, "forker.py", str(pidfile), "hang"], "grace": 1})
    t0 = time.monotonic()
    with pytest.raises(EvaluationTimeout, match=r"timeout of 1 s"):
        run_command(spec, {}, ctx(programs), timeout=1)
    assert time.monotonic() - t0 < 5
    assert pid_gone(int(pidfile.read_text()))


def test_a_timeout_does_not_wait_the_grace_for_a_program_that_ends_on_sigterm(programs):
    # the group's leader is a zombie until reaped: counting it as alive made every timeout last the whole grace
    spec = CommandSpec.from_mapping({"command": ["sh", "-c", "sleep 30"], "grace": 10})
    t0 = time.monotonic()
    with pytest.raises(EvaluationTimeout):
        run_command(spec, {}, ctx(programs), timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_a_child_left_behind_by_a_program_that_ended_is_stopped(programs, tmp_path):
    pidfile = tmp_path / "child.pid"
    spec = CommandSpec.from_mapping({"command": [sys.executable, "forker.py", str(pidfile), "exit"], "grace": 1})
    assert run_command(spec, {}, ctx(programs)) == 1.5
    assert pid_gone(int(pidfile.read_text()))


def test_the_trial_folder_is_made_fresh(programs):
    trial = programs / "out" / "trials" / "0"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text('{"y": 1}')  # left by an earlier attempt: must not count
    with pytest.raises(InvalidResult):
        run_command(CommandSpec.from_mapping({"command": "true", "result": "result.json"}), {}, ctx(programs))


def test_inactive_parameters_drop_their_argument_and_flag():
    spec = CommandSpec.from_mapping({"command": "python3 train.py --lr {lr} --layers {layers} --act={act} -v"})
    argv = render_argv(spec, {"lr": 1e-3, "layers": 2, "act": "relu"}, inactive=["layers", "act"])
    assert argv == ["python3", "train.py", "--lr", "0.001", "-v"]
    # a value that is a negative number is not a flag; a placeholder in the flag's place is not a literal flag
    spec = CommandSpec.from_mapping({"command": ["prog", "-3", "{a}", "{flag}", "{b}"]})
    assert render_argv(spec, {"a": 1, "flag": "--b", "b": 2}, inactive=["b"]) == ["prog", "-3", "1", "--b"]


def test_values_stay_one_argument_and_never_reach_a_shell(programs, tmp_path):
    code = "import sys, json; print(json.dumps({{'a': sys.argv[1:]}}))"  # braces doubled: not a placeholder
    spec = CommandSpec.from_mapping({"command": [sys.executable, "-c", code, "{name}"]})
    evil = f"x; touch {tmp_path}/pwned"
    assert run_command(spec, {"name": evil}, ctx(programs)) == {"a": [evil]}
    # shell: true quotes each value: still one word
    spec = CommandSpec.from_mapping({"command": "printf '%s\\n' {name} | wc -l", "shell": True})
    assert run_command(spec, {"name": evil}, ctx(programs)) == 1
    assert not (tmp_path / "pwned").exists()


def test_literal_braces_and_unknown_placeholders():
    spec = CommandSpec.from_mapping({"command": ["prog", "{{not-a-placeholder}}", "{x}"]})
    assert render_argv(spec, {"x": 1}) == ["prog", "{not-a-placeholder}", "1"]
    assert placeholders(spec) == {"x"}
    with pytest.raises(CommandSpecError, match=r"objective.command: unknown placeholder \{y\}"):
        CommandSpec.from_mapping({"command": "prog {x} {y}"}).check(["x"])
    with pytest.raises(CommandSpecError, match=r"objective.env.OUT: unknown placeholder \{z\}"):
        CommandSpec.from_mapping({"command": "prog", "env": {"OUT": "{z}"}}).check(["x"])
    CommandSpec.from_mapping({"command": "prog {trial_dir} {eval} {seed} {worker_id}"}).check([])


@pytest.mark.parametrize("raw,where", [
    ({"command": ""}, "objective.command"),
    ({"command": "prog 'unclosed"}, "objective.command"),
    ({"command": ["a"], "shell": True}, "objective.shell"),
    ({"command": "a", "result": {"regex": "(no names)"}}, "objective.result.regex"),
    ({"command": "a", "result": 3}, "objective.result"),
    ({"command": "a", "cwd": "/tmp"}, "objective.cwd"),
    ({"command": "a", "colour": "red"}, "objective.colour"),
    ({"command": "a {"}, "objective.command"),
])
def test_bad_specs_name_the_yaml_key(raw, where):
    with pytest.raises(CommandSpecError) as e:
        CommandSpec.from_mapping(raw)
    assert e.value.key == where and str(e.value).startswith(where + ": ")


def test_the_overhead_of_one_evaluation_is_small(programs):
    # not a benchmark (bench/ has it): a guard that nothing slow (a shell, a Python start) was added per run
    spec = CommandSpec.from_mapping({"command": ["true"]})
    t0 = time.perf_counter()
    for i in range(20):
        with pytest.raises(InvalidResult):
            run_command(spec, {}, ctx(programs, i))
    assert (time.perf_counter() - t0) / 20 < 0.5
    assert json.loads(json.dumps({"ok": True}))


