"""Tests of the PBS Pro emulator in tests/pbs_emulator (real processes, no mocks).

Every test gets its own PBS_EMU_HOME, HOME and submission directory under tmp_path.  The ``pbs``
fixture removes every job a test started (``qdel -W force``), waits until the emulator reports
them finished, and then checks that no recorded process group and no supervisor is left.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import PBS_EMULATOR, wait_until

EMU = PBS_EMULATOR
BIN = EMU / "bin"
JOBID_RE = re.compile(r"^\d+\.pbsemu$")
ARRAYID_RE = re.compile(r"^\d+\[\]\.pbsemu$")


def group_alive(pgid: int) -> bool:
    """Is any live (non-zombie) process left in the group?  Zombies wait for their reaper only."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PBS:
    """The emulator's commands with an isolated environment."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path
        self.home = tmp_path / "home"
        self.work = tmp_path / "work"
        self.emu = tmp_path / "emu"
        for d in (self.home, self.work):
            d.mkdir()
        self.env = dict(os.environ)
        self.env.update({
            "PBS_EMU_HOME": str(self.emu), "HOME": str(self.home), "PATH": f"{BIN}:{os.environ['PATH']}",
            "PBS_EMU_KILL_DELAY": "1",
        })
        for var in ("PBS_EMU_SERVER", "PBS_EMU_JSON_STYLE", "PBS_EMU_WALLTIME_EXIT_STATUS", "PBS_EMU_NCPUS",
                    "PBS_EMU_SCHED_DELAY", "PBS_EMU_QUEUES"):
            self.env.pop(var, None)

    def run(self, *args: str, input: str | None = None, env: dict | None = None, check_rc: int | None = None):
        e = dict(self.env)
        e.update(env or {})
        p = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=self.work, env=e, input=input,
                           capture_output=True, text=True, timeout=30)
        if check_rc is not None:
            assert p.returncode == check_rc, (args, p.returncode, p.stdout, p.stderr)
        return p

    def qsub(self, *args: str, input: str | None = None, env: dict | None = None) -> str:
        p = self.run("qsub", *args, input=input, env=env, check_rc=0)
        jid = p.stdout.strip()
        assert JOBID_RE.match(jid) or ARRAYID_RE.match(jid), p.stdout
        return jid

    def script(self, name: str, text: str) -> str:
        path = self.work / name
        path.write_text(text)
        return name

    def full(self, jid: str) -> dict[str, str]:
        """``qstat -x -f`` parsed tolerantly (continuation lines joined)."""
        p = self.run("qstat", "-x", "-f", jid, check_rc=0)
        attrs: dict[str, str] = {}
        last = None
        for line in p.stdout.splitlines():
            if line.startswith("    ") and " = " in line:
                last, value = line[4:].split(" = ", 1)
                attrs[last] = value
            elif line.startswith("\t") and last:
                attrs[last] += line[1:]
        return attrs

    def state(self, jid: str) -> str:
        return self.full(jid).get("job_state", "?")

    def wait_state(self, jid: str, states: str, timeout: float = 15.0) -> dict[str, str]:
        return wait_until(lambda: (lambda a: a if a.get("job_state", "?") in states else None)(self.full(jid)),
                        timeout, what=f"{jid} to reach one of {states!r}")

    def records(self) -> list[dict]:
        out = []
        for path in glob.glob(str(self.emu / "jobs" / "*.json")):
            with open(path) as f:
                out.append(json.load(f))
        return out

    def recorded_processes(self) -> tuple[set[int], set[int]]:
        pgids, supervisors = set(), set()
        for rec in self.records():
            units = [rec] + list(rec.get("subjobs", {}).values())
            for u in units:
                if u.get("session_id"):
                    pgids.add(u["session_id"])
                if u.get("supervisor_pid"):
                    supervisors.add(u["supervisor_pid"])
        return pgids, supervisors

    def cleanup(self) -> None:
        if not self.emu.exists():
            return
        active = [line.split()[0] for line in self.run("qstat", "-w").stdout.splitlines()[2:] if line.strip()]
        if active:
            self.run("qdel", "-W", "force", *active)
        try:
            wait_until(lambda: self.run("qstat").stdout.strip() == "", 15, what="all jobs to finish")
        finally:
            pgids, supervisors = self.recorded_processes()
            leftovers = [g for g in pgids if group_alive(g)]
            for g in leftovers:                       # safety net: only the recorded groups
                try:
                    os.killpg(g, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            assert leftovers == [], f"process groups still alive after qdel: {leftovers}"
            wait_until(lambda: not any(pid_alive(p) for p in supervisors), 10, what="supervisors to exit")


@pytest.fixture
def pbs(tmp_path):
    emulator = PBS(tmp_path)
    yield emulator
    emulator.cleanup()


# ----------------------------------------------------------------------------------------------


def test_submit_run_finish_with_exit_status_env_and_default_files(pbs):
    name = pbs.script("job.sh", """#!/bin/bash
#PBS -N envjob
#PBS -l select=1:ncpus=2:mem=100mb
#PBS -l walltime=00:05:00
echo "pwd=$(pwd)"
echo "jobid=$PBS_JOBID"
echo "jobname=$PBS_JOBNAME"
echo "workdir=$PBS_O_WORKDIR"
echo "environment=$PBS_ENVIRONMENT"
echo "nodefile=$(cat "$PBS_NODEFILE")"
echo "tmpdir_exists=$([ -d "$TMPDIR" ] && echo yes)"
echo "ncpus=$NCPUS"
echo "to stderr" >&2
exit 3
""")
    t0 = time.monotonic()
    jid = pbs.qsub(name)
    assert time.monotonic() - t0 < 3
    attrs = pbs.wait_state(jid, "F")
    assert attrs["Exit_status"] == "3"
    assert attrs["Job_Name"] == "envjob"
    assert attrs["Resource_List.ncpus"] == "2" and attrs["Resource_List.walltime"] == "00:05:00"
    assert attrs["Resource_List.select"] == "1:ncpus=2:mem=100mb"
    assert attrs["comment"].endswith("and finished")
    seq = jid.split(".")[0]
    out = (pbs.work / f"envjob.o{seq}").read_text()
    assert (pbs.work / f"envjob.e{seq}").read_text() == "to stderr\n"
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert lines == {"pwd": str(pbs.home), "jobid": jid, "jobname": "envjob", "workdir": str(pbs.work),
                     "environment": "PBS_BATCH", "nodefile": "localhost", "tmpdir_exists": "yes", "ncpus": "2"}
    # finished jobs need -x
    p = pbs.run("qstat", jid)
    assert p.returncode == 35
    assert p.stderr == f"qstat: {jid} Job has finished, use -x or -H to obtain historical job information\n"
    table = pbs.run("qstat", "-x", jid, check_rc=0).stdout.splitlines()
    assert table[0] == "Job id            Name             User              Time Use S Queue"
    assert table[1] == "----------------  ---------------- ----------------  -------- - -----"
    assert table[2].split()[0] == jid and table[2].split()[4] == "F"


def test_output_files_land_in_o_and_e_paths_and_join(pbs):
    (pbs.work / "logs").mkdir()
    jid = pbs.qsub("-o", "logs/out.txt", "-e", str(pbs.root / "err.txt"), "--",
                   "/bin/sh", "-c", "echo out; echo err >&2")
    pbs.wait_state(jid, "F")
    assert (pbs.work / "logs" / "out.txt").read_text() == "out\n"
    assert (pbs.root / "err.txt").read_text() == "err\n"
    attrs = pbs.full(jid)
    assert attrs["Output_Path"].endswith(":" + str(pbs.work / "logs" / "out.txt"))
    assert attrs["Job_Name"] == "STDIN"

    jid = pbs.qsub("-j", "oe", "-N", "joined", input="echo one\necho two >&2\n")
    pbs.wait_state(jid, "F")
    seq = jid.split(".")[0]
    assert (pbs.work / f"joined.o{seq}").read_text() == "one\ntwo\n"
    assert not (pbs.work / f"joined.e{seq}").exists()


def test_array_subjob_ids_env_throttle_and_exit_status(pbs):
    name = pbs.script("arr.sh", """#!/bin/bash
#PBS -N arr
echo "$PBS_ARRAY_INDEX $PBS_ARRAY_ID $PBS_JOBID"
python3 -c 'import time; print(time.time())'
sleep 0.4
python3 -c 'import time; print(time.time())'
[ "$PBS_ARRAY_INDEX" = 4 ] && exit 1
exit 0
""")
    jid = pbs.qsub("-J", "0-6:2%2", name)
    assert ARRAYID_RE.match(jid)
    seq = jid.split("[")[0]
    table = pbs.run("qstat", "-t", jid, check_rc=0).stdout.splitlines()
    ids = [line.split()[0] for line in table[2:]]
    assert ids == [jid] + [f"{seq}[{i}].pbsemu" for i in (0, 2, 4, 6)]
    wait_until(lambda: pbs.run("qstat", jid).returncode == 35, 20, what="array to finish")
    parent = pbs.full(jid)
    assert parent["job_state"] == "F" and parent["Exit_status"] == "1"
    assert parent["array_indices_submitted"] == "0-6:2"
    assert parent["array_state_count"] == "Queued:0 Running:0 Exiting:0 Expired:4 "
    doc = json.loads(pbs.run("qstat", "-x", "-t", "-f", "-F", "json", jid, check_rc=0).stdout)
    sub = {k: v for k, v in doc["Jobs"].items() if k != jid}
    assert {k: (v["job_state"], v["Exit_status"], v["array_index"]) for k, v in sub.items()} == {
        f"{seq}[0].pbsemu": ("F", 0, 0), f"{seq}[2].pbsemu": ("F", 0, 2),
        f"{seq}[4].pbsemu": ("F", 1, 4), f"{seq}[6].pbsemu": ("F", 0, 6)}
    spans = []
    for i in (0, 2, 4, 6):
        first, start, end = (pbs.work / f"arr.o{seq}.{i}").read_text().split("\n")[:3]
        assert first == f"{i} {jid} {seq}[{i}].pbsemu"
        spans.append((float(start), float(end)))
    # %2: never more than two subjobs at the same time
    for t, _ in spans:
        assert sum(1 for s, e in spans if s <= t < e) <= 2


@pytest.mark.parametrize("configured", [None, "271"])
def test_walltime_is_enforced(pbs, configured):
    env = {"PBS_EMU_WALLTIME_EXIT_STATUS": configured} if configured else None
    jid = pbs.qsub("-l", "walltime=00:00:01", "-N", "slow", "--", "/bin/sleep", "30", env=env)
    t0 = time.monotonic()
    attrs = pbs.wait_state(jid, "F", timeout=15)
    assert time.monotonic() - t0 < 8
    # PBS Pro 2021+ reports JOB_EXEC_KILL_WALLTIME (-29); older servers the signal (256+15)
    assert attrs["Exit_status"] == (configured or "-29")
    err = (pbs.work / f"slow.e{jid.split('.')[0]}").read_text()
    assert re.match(r"=>> PBS: job killed: walltime \d+ exceeded limit 1\n", err)


def test_qdel_running_then_finished_and_unknown(pbs):
    jid = pbs.qsub("--", "/bin/sleep", "60")
    attrs = pbs.wait_state(jid, "R")
    pgid = int(attrs["session_id"])
    assert group_alive(pgid)
    p = pbs.run("qdel", jid)
    assert p.returncode == 0 and p.stdout == p.stderr == ""
    attrs = pbs.wait_state(jid, "F")
    assert attrs["Exit_status"] == "271"
    assert not group_alive(pgid)
    p = pbs.run("qdel", jid)
    assert (p.returncode, p.stderr) == (35, f"qdel: Job has finished {jid}\n")
    p = pbs.run("qdel", "99999")
    assert (p.returncode, p.stderr) == (153, "qdel: Unknown Job Id 99999.pbsemu\n")


def test_qdel_kills_after_grace_when_term_is_ignored(pbs):
    jid = pbs.qsub(input="trap '' TERM\nsleep 60 &\nwait\n")
    pbs.wait_state(jid, "R")
    t0 = time.monotonic()
    pbs.run("qdel", jid, check_rc=0)
    assert pbs.state(jid) == "E"
    attrs = pbs.wait_state(jid, "F")
    assert time.monotonic() - t0 >= 0.9            # PBS_EMU_KILL_DELAY=1
    assert attrs["Exit_status"] == str(256 + signal.SIGKILL)


def test_qdel_queued_job_leaves_history_without_exit_status(pbs):
    jid = pbs.qsub("-h", "--", "/bin/true")
    pbs.run("qdel", jid, check_rc=0)
    attrs = pbs.wait_state(jid, "F")
    assert "Exit_status" not in attrs and "stime" not in attrs


def test_qstat_unknown_id_still_prints_the_known_ones(pbs):
    a = pbs.qsub("-h", "-N", "first", "--", "/bin/true")
    b = pbs.qsub("-h", "-N", "second", "--", "/bin/true")
    p = pbs.run("qstat", a, "99999", b)
    assert p.returncode == 153
    assert p.stderr == "qstat: Unknown Job Id 99999.pbsemu\n"
    rows = p.stdout.splitlines()
    assert rows[0].startswith("Job id") and [r.split()[0] for r in rows[2:]] == [a, b]
    assert all(r.split()[4] == "H" for r in rows[2:])
    # qstat.c gets the header with the first operand only
    p = pbs.run("qstat", "99999", a)
    assert p.returncode == 153 and p.stdout.split()[0] == a
    p = pbs.run("qstat", "-f", "-F", "json", a, "99999.pbsemu", b)
    assert p.returncode == 153
    doc = json.loads(p.stdout)
    assert set(doc["Jobs"]) == {a, b}
    assert doc["pbs_server"] == "pbsemu" and isinstance(doc["timestamp"], int)
    p = pbs.run("qstat", "-f", "-F", "json", "99999")
    assert p.returncode == 153 and "Jobs" not in json.loads(p.stdout)


def test_hold_and_qrls(pbs):
    jid = pbs.qsub("-h", "-N", "held", "--", "/bin/sh", "-c", "echo released")
    attrs = pbs.full(jid)
    assert (attrs["job_state"], attrs["Hold_Types"]) == ("H", "u")
    time.sleep(0.5)                                 # a held job must not start on its own
    assert pbs.state(jid) == "H"
    pbs.run("qrls", jid, check_rc=0)
    attrs = pbs.wait_state(jid, "F")
    assert attrs["Exit_status"] == "0"
    assert (pbs.work / f"held.o{jid.split('.')[0]}").read_text() == "released\n"


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_qsig_suspend_resume_and_signals(pbs):
    marker = pbs.root / "usr1"
    jid = pbs.qsub(input=f"trap 'touch {marker}' USR1\nwhile true; do sleep 0.1; done\n")
    pgid = int(pbs.wait_state(jid, "R")["session_id"])
    pbs.run("qsig", "-s", "suspend", jid, check_rc=0)
    assert pbs.state(jid) == "S"
    wait_until(lambda: proc_state(pgid) == "T", 5, what="job shell to be stopped")
    p = pbs.run("qsig", "-s", "suspend", jid)
    assert (p.returncode, p.stderr) == (168, f"qsig: Request invalid for state of job {jid}\n")
    pbs.run("qsig", "-s", "resume", jid, check_rc=0)
    assert pbs.state(jid) == "R"
    wait_until(lambda: proc_state(pgid) != "T", 5, what="job shell to continue")
    pbs.run("qsig", "-s", "SIGUSR1", jid, check_rc=0)
    wait_until(marker.exists, 5, what="USR1 trap")
    p = pbs.run("qsig", "-s", "NOSUCH", jid)
    assert p.returncode == 165
    pbs.run("qdel", jid, check_rc=0)
    assert pbs.wait_state(jid, "F")["Exit_status"] == "271"


def test_json_parses_for_normal_names_and_reproduces_the_escaping_quirk(pbs):
    ok = pbs.qsub("-N", "normal_name", "-v", "ALPHA=1,BETA=two words", "--", "/bin/true")
    pbs.wait_state(ok, "F")
    doc = json.loads(pbs.run("qstat", "-x", "-f", "-F", "json", ok, check_rc=0).stdout)
    job = doc["Jobs"][ok]
    assert job["Job_Name"] == "normal_name" and job["job_state"] == "F" and job["Exit_status"] == 0
    assert job["Variable_List"]["ALPHA"] == 1 and job["Variable_List"]["BETA"] == "two words"
    assert job["Resource_List"] == {"ncpus": 1, "nodect": 1, "place": "pack", "select": "1:ncpus=1"}

    # backslashes are not escaped: invalid JSON, or worse, valid JSON with another value
    bad = pbs.qsub("-h", "-N", "C:\\data", "--", "/bin/true")
    out = pbs.run("qstat", "-f", "-F", "json", bad, check_rc=0).stdout
    assert '"Job_Name":"C:\\data"' in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    tab = pbs.qsub("-h", "-N", "C:\\temp", "--", "/bin/true")
    assert json.loads(pbs.run("qstat", "-f", "-F", "json", tab).stdout)["Jobs"][tab]["Job_Name"] == "C:\temp"
    quoted = pbs.qsub("-h", "-N", 'say"hi"', "--", "/bin/true")
    legacy = pbs.run("qstat", "-f", "-F", "json", quoted, env={"PBS_EMU_JSON_STYLE": "legacy"}, check_rc=0).stdout
    assert '"Job_Name":"say"hi""' in legacy
    with pytest.raises(json.JSONDecodeError):
        json.loads(legacy)
    # PBS 2021+ escapes a quote unless it is the first character
    assert json.loads(pbs.run("qstat", "-f", "-F", "json", quoted).stdout)["Jobs"][quoted]["Job_Name"] == 'say"hi"'
    # OpenPBS 23.06+ (cJSON): always valid, tab-indented, values parsed as JSON where possible
    out = pbs.run("qstat", "-f", "-F", "json", bad, quoted, env={"PBS_EMU_JSON_STYLE": "cjson"}, check_rc=0).stdout
    assert out.startswith('{\n\t"timestamp":\t')
    jobs = json.loads(out)["Jobs"]
    assert (jobs[bad]["Job_Name"], jobs[quoted]["Job_Name"]) == ("C:\\data", 'say"hi"')


def test_dependency_afterok_and_afternotok(pbs, tmp_path):
    # the first job ends only when the test says so: the held states are checked while it runs,
    # whatever the machine's load (a fixed sleep raced with a busy machine)
    gate = tmp_path / "gate"
    first = pbs.qsub("--", "/bin/sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; exit 0")
    ok = pbs.qsub("-W", f"depend=afterok:{first}", "--", "/bin/true")
    notok = pbs.qsub("-W", f"depend=afternotok:{first}", "--", "/bin/true")
    attrs = pbs.full(ok)
    assert (attrs["job_state"], attrs["Hold_Types"], attrs["depend"]) == ("H", "s", f"afterok:{first}")
    gate.touch()
    assert pbs.wait_state(ok, "F")["Exit_status"] == "0"
    attrs = pbs.wait_state(notok, "F")
    assert "Exit_status" not in attrs and "dependency" in attrs["comment"]


def test_command_line_errors(pbs):
    p = pbs.run("qsub", "-Y", "x")
    assert p.returncode == 2 and p.stderr.startswith("qsub: invalid option -- 'Y'\nusage: qsub [-a date_time]")
    p = pbs.run("qsub", "-q", "nosuch", "--", "/bin/true")
    assert (p.returncode, p.stderr) == (170, "qsub: Unknown queue\n")
    p = pbs.run("qsub", "missing.sh")
    assert p.returncode == 1 and "No such file or directory" in p.stderr
    p = pbs.run("qstat", "-F", "json")
    assert p.returncode == 2 and p.stderr.startswith("qstat: conflicting options.\n")
    p = pbs.run("qdel")
    assert p.returncode == 2 and "usage:" in p.stderr
    p = pbs.run("qstat", "12x")
    assert (p.returncode, p.stderr) == (1, "qstat: illegally formed job identifier: 12x\n")


def test_parallel_qsub_gets_unique_ids_and_capacity_queues_jobs(pbs):
    env = dict(pbs.env, PBS_EMU_NCPUS="2")
    # jobs of 2 s: long enough that a qstat slowed by a loaded machine still sees them run
    procs = [subprocess.Popen([str(BIN / "qsub"), "-l", "ncpus=1", "--", "/bin/sleep", "2"], cwd=pbs.work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    ids = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert all(JOBID_RE.match(j) for j in ids) and len(set(ids)) == 8
    # two ncpus on the emulated node: never more than two jobs running at once
    seen_running = 0
    deadline = time.monotonic() + 120
    while pbs.run("qstat").stdout.strip():
        assert time.monotonic() < deadline, "the 8 jobs did not end within 120 s"
        rows = pbs.run("qstat").stdout.splitlines()[2:]
        running = sum(1 for r in rows if r.split()[4] == "R")
        seen_running = max(seen_running, running)
        assert running <= 2
        time.sleep(0.05)
    assert seen_running >= 1
    for j in ids:
        assert pbs.full(j)["Exit_status"] == "0"


def test_without_job_history_finished_jobs_vanish(pbs):
    jid = pbs.qsub("--", "/bin/sh", "-c", "sleep 0.3", env={"PBS_EMU_JOB_HISTORY": "0"})
    p = wait_until(lambda: (lambda p: p if p.returncode == 153 else None)(pbs.run("qstat", "-x", jid)), 10,
                 what="the job to vanish")
    assert p.stderr == f"qstat: Unknown Job Id {jid}\n" and p.stdout == ""
    p = pbs.run("qdel", jid)
    assert (p.returncode, p.stderr) == (153, f"qdel: Unknown Job Id {jid}\n")
