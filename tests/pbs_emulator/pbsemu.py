"""pbsemu: a small, faithful-in-the-details emulator of the PBS Pro 2022 client commands.

The four commands in ``bin/`` (``qsub``, ``qstat``, ``qdel``, ``qsig``, plus ``qrls``) are thin
wrappers around the ``main_*`` functions here.  There is no server daemon: every job has a small
*supervisor* process (started by ``qsub``, detached with a double fork and ``setsid``) that waits
for holds and dependencies, starts the batch script with ``/bin/bash`` in its own session and
process group, enforces the walltime, stages the output files and records the exit status.

State lives in ``$PBS_EMU_HOME`` (default ``/tmp/pbs-emu-$UID``)::

    seq, seq.lock          job sequence counter (fcntl lock)
    jobs/<seq>.json        one record per job (array: one record for the parent and its subjobs)
    jobs/<seq>.lock        fcntl lock taken for every read-modify-write of that record
    sched.json, sched.lock ncpus allocated per running job (the emulated node's capacity)
    spool/                 job scripts and the .OU/.ER files while a job runs
    aux/                   PBS_NODEFILE files
    tmp/                   per-job TMPDIR
    undelivered/           output files that could not be copied to their destination
    logs/                  supervisor logs

Output formats and error messages follow OpenPBS's ``src/cmds/qstat.c``, ``qdel.c``, ``qsig.c``,
``src/lib/Libjson/pbs_json.c`` and ``src/include/pbs_error.h``; see README.md for sources and the
known differences.  Only the Python 3 standard library is used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getopt
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import sys
import time
import traceback

# --------------------------------------------------------------------------------------------
# configuration (read from the environment at call time so tests can change it per process)
# --------------------------------------------------------------------------------------------


def emu_home() -> str:
    return os.environ.get("PBS_EMU_HOME") or f"/tmp/pbs-emu-{os.getuid()}"


def server_name() -> str:
    return os.environ.get("PBS_EMU_SERVER") or "pbsemu"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def pbs_version() -> str:
    return os.environ.get("PBS_EMU_VERSION") or "2022.1.1"


def queues() -> list[str]:
    return [q.strip() for q in (os.environ.get("PBS_EMU_QUEUES") or "workq").split(",") if q.strip()]


def json_mode() -> str:
    """Which qstat -F json writer to imitate (PBS_EMU_JSON_STYLE):

    '2022'   (default) the hand-written writer of OpenPBS 20.0-22.05 / PBS Pro 2020-2022: values are
             partially escaped (backslashes never, a leading double quote never) -> JSON can be invalid;
    'legacy' the same writer before OpenPBS PR #2049 (PBS Pro <= 19): double quotes not escaped either;
    'cjson'  OpenPBS 23.06+ (cJSON, tab-indented): always valid JSON, values parsed as JSON when they can be.
    """
    v = (os.environ.get("PBS_EMU_JSON_STYLE") or "2022").lower()
    return v if v in ("legacy", "cjson") else "2022"


POLL = 0.05                     # supervisor tick when something is due, seconds
IDLE_POLL = 0.25                # otherwise (a child's exit wakes the supervisor at once)
DEFAULT_QUEUE = "workq"
PBS_FILE_ARRAY_INDEX_TAG = "^array_index^"
MAX_ARRAY_SIZE = 10000          # server max_array_size default
MAX_JOBNAME = 236               # PBS_MAXJOBNAME

# substates (src/include/job.h)
SUBSTATE = {"Q": 10, "H": 20, "W": 30, "R": 42, "S": 43, "E": 50, "B": 42, "F": 92, "X": 92}
SUBSTATE_TERMINATED = 91

# pbs_errno values and their texts (src/include/pbs_error.h, src/lib/Libpbs/pbs_errmsg)
PBSE_UNKJOBID = 15001
PBSE_UNKSIG = 15013
PBSE_BADATVAL = 15014
PBSE_BADSTATE = 15016
PBSE_UNKQUE = 15018
PBSE_BADDEPEND = 15054
PBSE_MAXARRAYSIZE = 15107
PBSE_HISTJOBID = 15139
PBSE_TEXT = {
    PBSE_UNKJOBID: "Unknown Job Id",
    PBSE_UNKSIG: "Unknown signal",
    PBSE_BADATVAL: "Illegal attribute or resource value",
    PBSE_BADSTATE: "Request invalid for state of job",
    PBSE_UNKQUE: "Unknown queue",
    PBSE_BADDEPEND: "Invalid dependency",
    PBSE_MAXARRAYSIZE: "Array job exceeds server or queue size limit",
    PBSE_HISTJOBID: "Job has finished",
}


def rc(pbs_errno: int) -> int:
    """Commands exit with pbs_errno; the shell sees it modulo 256 (15001 -> 153, 15139 -> 35)."""
    return pbs_errno % 256


def err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def hostname() -> str:
    return os.environ.get("PBS_EMU_HOSTNAME") or socket.gethostname()


def short_host() -> str:
    return os.environ.get("PBS_EMU_EXEC_HOST") or hostname().split(".")[0]


def username() -> str:
    if os.environ.get("PBS_EMU_USER"):
        return os.environ["PBS_EMU_USER"]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def fmt_hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return "%02d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def parse_duration(text: str) -> int | None:
    """PBS time values: [[HH:]MM:]SS[.ms] -> seconds."""
    text = text.strip()
    if not re.fullmatch(r"\d+(:\d+){0,2}(\.\d+)?", text):
        return None
    parts = text.split(".")[0].split(":")
    total = 0
    for p in parts:
        total = total * 60 + int(p)
    return total


def ctime_str(epoch: float | None) -> str | None:
    return None if epoch is None else time.ctime(epoch)


def run_comment_time(epoch: float) -> str:
    return time.strftime("%a %b %d at %H:%M", time.localtime(epoch))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def killpg(pgid: int | None, sig: int) -> bool:
    """Signal a recorded process group; never anything else."""
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def live_group_members(pgid: int) -> list[int]:
    """Processes of a group that are not zombies (Linux /proc; [] elsewhere)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def kill_group_and_wait(pgid: int, timeout: float = 2.0) -> None:
    """SIGKILL what is left of a job's group and wait until no live member remains."""
    deadline = time.time() + timeout
    while True:
        killpg(pgid, signal.SIGKILL)
        if not live_group_members(pgid) or time.time() > deadline:
            return
        time.sleep(0.01)


def range_string(indices: list[int]) -> str:
    """Compact index list: 0-9, 1,3,5-7 (steps of the -J range are kept as X-Y:Z)."""
    if not indices:
        return "-"
    out, i = [], 0
    while i < len(indices):
        j = i
        step = indices[i + 1] - indices[i] if i + 1 < len(indices) else 1
        while j + 1 < len(indices) and indices[j + 1] - indices[j] == step:
            j += 1
        if j == i:
            out.append(str(indices[i]))
        elif step == 1:
            out.append(f"{indices[i]}-{indices[j]}")
        else:
            out.append(f"{indices[i]}-{indices[j]}:{step}")
        i = j + 1
    return ",".join(out)


# --------------------------------------------------------------------------------------------
# job ids
# --------------------------------------------------------------------------------------------

_ID_RE = re.compile(r"^(\d+)(?:\[(\d*)\])?(?:\.(.+))?$")


class JobRef:
    """A parsed job identifier: plain job '123', array parent '123[]' or subjob '123[4]'."""

    def __init__(self, text: str):
        m = _ID_RE.match(text.strip())
        if not m:
            raise ValueError(text)
        self.text = text
        self.seq = int(m.group(1))
        self.bracket = "[" in text
        self.index = int(m.group(2)) if m.group(2) else None
        self.server = m.group(3)
        self.kind = "sub" if self.index is not None else ("parent" if self.bracket else "job")

    def ours(self) -> bool:
        s = server_name()
        return (self.server is None or self.server == s or self.server.startswith(s + ".")
                or s.startswith(self.server + "."))          # short form, as in qstat's table

    def full(self) -> str:
        """The id the way PBS completes it (get_server appends the default server)."""
        srv = self.server if self.server is not None else server_name()
        if self.kind == "job":
            return f"{self.seq}.{srv}"
        if self.kind == "parent":
            return f"{self.seq}[].{srv}"
        return f"{self.seq}[{self.index}].{srv}"


def job_id(rec: dict, idx: int | None = None) -> str:
    if rec.get("is_array"):
        return f"{rec['seq']}[{'' if idx is None else idx}].{rec['server']}"
    return f"{rec['seq']}.{rec['server']}"


# --------------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------------


class Store:
    def __init__(self, home: str | None = None):
        self.home = home or emu_home()
        for sub in ("jobs", "spool", "aux", "tmp", "undelivered", "logs"):
            os.makedirs(os.path.join(self.home, sub), exist_ok=True)

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    @contextlib.contextmanager
    def _flock(self, path: str):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def lock(self, seq: int):
        return self._flock(self.path("jobs", f"{seq}.lock"))

    def sched_lock(self):
        return self._flock(self.path("sched.lock"))

    def next_seq(self) -> int:
        with self._flock(self.path("seq.lock")):
            try:
                with open(self.path("seq")) as f:
                    seq = int(f.read().strip())
            except (FileNotFoundError, ValueError):
                seq = _env_int("PBS_EMU_FIRST_SEQ", 100)
            self._write_atomic(self.path("seq"), f"{seq + 1}\n")
            return seq

    def _write_atomic(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def load(self, seq: int) -> dict | None:
        try:
            with open(self.path("jobs", f"{seq}.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def save(self, rec: dict) -> None:
        self._write_atomic(self.path("jobs", f"{rec['seq']}.json"), json.dumps(rec, indent=1))

    def remove(self, seq: int) -> None:
        for name in (f"{seq}.json", f"{seq}.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path("jobs", name))

    def seqs(self) -> list[int]:
        out = []
        for name in os.listdir(self.path("jobs")):
            if name.endswith(".json") and name[:-5].isdigit():
                out.append(int(name[:-5]))
        return sorted(out)

    # ---- emulated node capacity (ncpus) ----
    def allocate(self, key: str, ncpus: int, owner_pid: int) -> bool:
        capacity = _env_int("PBS_EMU_NCPUS", 64)
        with self.sched_lock():
            alloc = self._load_alloc()
            alloc = {k: v for k, v in alloc.items() if pid_alive(v.get("pid"))}
            if key not in alloc:
                used = sum(v["ncpus"] for v in alloc.values())
                if used + ncpus > capacity:
                    self._save_alloc(alloc)
                    return False
                alloc[key] = {"ncpus": ncpus, "pid": owner_pid}
            self._save_alloc(alloc)
            return True

    def release(self, key: str) -> None:
        with self.sched_lock():
            alloc = self._load_alloc()
            if alloc.pop(key, None) is not None:
                self._save_alloc(alloc)

    def _load_alloc(self) -> dict:
        try:
            with open(self.path("sched.json")) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def _save_alloc(self, alloc: dict) -> None:
        self._write_atomic(self.path("sched.json"), json.dumps(alloc))


def find_unit(rec: dict, ref: JobRef) -> tuple[bool, dict | None]:
    """(exists, unit) for a reference; unit is the record itself or the subjob dict."""
    if rec is None:
        return False, None
    if ref.kind == "job":
        return (not rec.get("is_array")), rec
    if not rec.get("is_array"):
        return False, None
    if ref.kind == "parent":
        return True, rec
    sub = rec["subjobs"].get(str(ref.index))
    return sub is not None, sub


def unit_state(rec: dict, idx: int | None) -> str:
    """The state qstat shows."""
    if idx is None:
        return rec["state"]
    st = rec["subjobs"][str(idx)]["state"]
    if rec["state"] == "F" and st == "X":
        return "F"
    return st


def is_history(rec: dict) -> bool:
    return rec["state"] == "F"


# --------------------------------------------------------------------------------------------
# qsub
# --------------------------------------------------------------------------------------------

QSUB_OPTS = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:P:q:r:R:S:u:v:VW:Xz"
QSUB_USAGE = """usage: qsub [-a date_time] [-A account_string] [-c interval]
        [-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]
        [-k o|e|oe] [-l resource_list] [-m mail_options] [-M user_list]
        [-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]
        [-S path] [-u user_list] [-W otherattributes=value...]
        [-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]
       qsub --version
"""
NOT_EMULATED_QSUB = {"a": "deferred execution", "c": "checkpointing", "f": "foreground", "I": "interactive jobs",
                     "X": "X11 forwarding", "R": "remove files", "u": "user lists"}


class UsageError(Exception):
    pass


class QsubError(Exception):
    def __init__(self, msg: str, code: int):
        super().__init__(msg)
        self.code = code


def _getopt_error(cmd: str, e: getopt.GetoptError) -> str:
    opt = e.opt or "?"
    if "requires argument" in e.msg:
        return f"{cmd}: option requires an argument -- '{opt}'"
    return f"{cmd}: invalid option -- '{opt[0] if opt else '?'}'"


def split_top_commas(text: str) -> list[str]:
    """Split at commas outside quotes (used for -l and -v lists)."""
    out, cur, quote = [], [], None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
            cur.append(ch)
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            cur.append(",")
            i += 1
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [x for x in out if x != ""]


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


class SubmitOptions:
    def __init__(self):
        self.values: dict[str, object] = {}
        self.resources: dict[str, str] = {}
        self.variables: list[tuple[str, str]] = []
        self.wattrs: dict[str, str] = {}

    def apply(self, opt: str, val: str, environ: dict) -> None:
        o = opt.lstrip("-")
        if o in NOT_EMULATED_QSUB:
            raise QsubError(f"qsub: option -{o} ({NOT_EMULATED_QSUB[o]}) is not emulated by pbsemu", 2)
        if o == "l":
            for item in split_top_commas(val):
                if "=" not in item:
                    raise QsubError("qsub: illegal -l value", 2)
                k, v = item.split("=", 1)
                self.resources[k.strip()] = v.strip()
        elif o == "v":
            for item in split_top_commas(val):
                if "=" in item:
                    k, v = item.split("=", 1)
                    self.variables.append((k.strip(), _unquote(v)))
                elif item.strip() in environ:
                    self.variables.append((item.strip(), environ[item.strip()]))
        elif o == "W":
            for item in split_top_commas(val):
                if "=" not in item:
                    raise QsubError("qsub: illegal -W value", 2)
                k, v = item.split("=", 1)
                self.wattrs[k.strip()] = v.strip()
        elif o == "N":
            if not val or len(val) > MAX_JOBNAME or any(c.isspace() for c in val) or not val.isprintable():
                raise QsubError("qsub: illegal -N value", 2)
            self.values["N"] = val
        elif o == "j":
            if val not in ("oe", "eo", "n"):
                raise QsubError("qsub: illegal -j value", 2)
            self.values["j"] = val
        elif o == "r":
            if val not in ("y", "n"):
                raise QsubError("qsub: illegal -r value", 2)
            self.values["r"] = val
        elif o == "k":
            if not re.fullmatch(r"n|[doe]+", val):
                raise QsubError("qsub: illegal -k value", 2)
            self.values["k"] = val
        elif o == "p":
            try:
                p = int(val)
            except ValueError:
                p = None
            if p is None or not -1024 <= p <= 1023:
                raise QsubError("qsub: illegal -p value", 2)
            self.values["p"] = str(p)
        elif o in ("h", "V", "z"):
            self.values[o] = True
        else:
            self.values[o] = val


def parse_directives(script_text: str, prefix: str) -> list[list[str]]:
    """Option vectors from '#PBS' lines; parsing stops at the first executable line (like qsub)."""
    out = []
    for line in script_text.splitlines():
        stripped = line.strip()
        if stripped == "":
            continue
        if line.startswith(prefix):
            rest = line[len(prefix):]
            if rest and not rest[0].isspace():
                continue
            try:
                out.append(shlex.split(rest, comments=True))
            except ValueError:
                raise QsubError(f"qsub: directive error: {line}", 2)
            continue
        if stripped.startswith("#"):
            continue
        break
    return out


def parse_select(spec: str) -> list[tuple[int, dict[str, str]]]:
    chunks = []
    for chunk in spec.split("+"):
        parts = chunk.split(":")
        count = 1
        if parts and parts[0].isdigit():
            count = int(parts[0])
            parts = parts[1:]
        res = {}
        for p in parts:
            if "=" not in p:
                raise ValueError(spec)
            k, v = p.split("=", 1)
            res[k] = v
        if count < 1:
            raise ValueError(spec)
        chunks.append((count, res))
    return chunks


_SIZE_RE = re.compile(r"^(\d+)([kmgtp]?)(b|w)?$", re.I)


def size_mul(value: str, n: int) -> str:
    m = _SIZE_RE.match(value)
    if not m or n == 1:
        return value
    return f"{int(m.group(1)) * n}{m.group(2).lower()}{(m.group(3) or 'b').lower()}"


def build_resource_list(res: dict[str, str]) -> tuple[dict[str, str], int, int, int | None]:
    """Resource_List as the server would complete it; returns (list, total ncpus, chunk ncpus, walltime s)."""
    res = dict(res)
    rl: dict[str, str] = {}
    walltime = None
    if "walltime" in res:
        walltime = parse_duration(res["walltime"])
        if walltime is None:
            raise QsubError(f"qsub: {PBSE_TEXT[PBSE_BADATVAL]} Resource_List.walltime", rc(PBSE_BADATVAL))
        rl["walltime"] = fmt_hms(walltime)
        del res["walltime"]
    if "select" in res:
        try:
            chunks = parse_select(res.pop("select"))
        except ValueError:
            raise QsubError(f"qsub: {PBSE_TEXT[PBSE_BADATVAL]} Resource_List.select", rc(PBSE_BADATVAL))
        select = "+".join(f"{n}:" + ":".join(f"{k}={v}" for k, v in r.items()) if r else str(n) for n, r in chunks)
        # ncpus defaults to 1 per chunk
        total = sum(n * int(r.get("ncpus", "1")) for n, r in chunks)
        rl["ncpus"] = str(total)
        rl["nodect"] = str(sum(n for n, _ in chunks))
        mems = [(n, r["mem"]) for n, r in chunks if "mem" in r]
        if mems and len(mems) == 1:
            rl["mem"] = size_mul(mems[0][1], mems[0][0])
        rl["select"] = select
        chunk_ncpus = int(chunks[0][1].get("ncpus", "1"))
        nchunks = len(chunks)
        res.pop("ncpus", None)
    else:
        ncpus = res.pop("ncpus", "1")
        if not ncpus.isdigit():
            raise QsubError(f"qsub: {PBSE_TEXT[PBSE_BADATVAL]} Resource_List.ncpus", rc(PBSE_BADATVAL))
        sel = f"1:ncpus={ncpus}"
        if "mem" in res:
            sel += f":mem={res['mem']}"
        rl["ncpus"] = ncpus
        rl["nodect"] = "1"
        rl["select"] = sel
        total = chunk_ncpus = int(ncpus)
        nchunks = 1
    rl["place"] = res.pop("place", "pack" if nchunks == 1 else "free")
    for k, v in res.items():
        rl[k] = v
    return dict(sorted(rl.items())), total, chunk_ncpus, walltime


def escape_var_value(v: str) -> str:
    """qsub stores variable values with \\ , ' and \" escaped by a backslash (see OpenPBS PR #2049)."""
    return re.sub(r"([\\,'\"])", r"\\\1", v)


def resolve_path(value: str | None, default_name: str, workdir: str, jobid_for_dir: str,
                 suffix: str) -> tuple[str, str]:
    """(attribute value 'host:/path', local destination path)."""
    host = hostname()
    if value:
        if ":" in value and not value.startswith("/"):
            h, p = value.split(":", 1)
            host = h or host
        else:
            p = value
        if not os.path.isabs(p):
            p = os.path.join(workdir, p)
        if p.endswith("/") or os.path.isdir(p):
            p = os.path.join(p, f"{jobid_for_dir}.{suffix}")
    else:
        p = os.path.join(workdir, default_name)
    return f"{host}:{p}", p


def main_qsub(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(f"pbs_version = {pbs_version()}")
        return 0
    environ = dict(os.environ)
    cmd_args = None
    if "--" in argv:
        cut = argv.index("--")
        argv, cmd_args = argv[:cut], argv[cut + 1:]
        if not cmd_args:
            sys.stderr.write(QSUB_USAGE)
            return 2
    try:
        opts, rest = getopt.gnu_getopt(argv, QSUB_OPTS)
    except getopt.GetoptError as e:
        err(_getopt_error("qsub", e))
        sys.stderr.write(QSUB_USAGE)
        return 2
    if (cmd_args is not None and rest) or len(rest) > 1:
        sys.stderr.write(QSUB_USAGE)
        return 2

    workdir = os.getcwd()
    # the job script
    if cmd_args is not None:
        script_text = "#!/bin/bash\nexec " + " ".join(shlex.quote(a) for a in cmd_args) + "\n"
        default_name = "STDIN"
    elif rest:
        try:
            with open(rest[0], errors="surrogateescape") as f:
                script_text = f.read()
        except OSError as e:
            err(f"qsub: script file:: {e.strerror}")
            return 1
        default_name = os.path.basename(rest[0])
    else:
        script_text = sys.stdin.read()
        default_name = "STDIN"

    cl = SubmitOptions()
    try:
        for o, v in opts:
            cl.apply(o, v, environ)
        prefix = str(cl.values.get("C", "#PBS"))
        so = SubmitOptions()
        if cmd_args is None:
            for vec in parse_directives(script_text, prefix):
                try:
                    dopts, drest = getopt.getopt(vec, QSUB_OPTS)
                except getopt.GetoptError as e:
                    raise QsubError(_getopt_error("qsub", e), 2)
                if drest:
                    raise QsubError(f"qsub: directive error: {' '.join(vec)}", 2)
                for o, v in dopts:
                    so.apply(o, v, environ)
        # command line wins over directives
        so.values.update(cl.values)
        so.resources.update(cl.resources)
        so.variables.extend(cl.variables)
        so.wattrs.update(cl.wattrs)
        rec = make_record(so, script_text, default_name, workdir, environ, argv, cmd_args)
    except QsubError as e:
        err(str(e))
        if e.code == 2:
            sys.stderr.write(QSUB_USAGE)
        return e.code

    store = Store()
    # dependencies must name known jobs
    try:
        check_depend(store, rec.get("depend"))
    except QsubError as e:
        err(str(e))
        return e.code
    seq = store.next_seq()
    finish_record(store, rec, seq, script_text)
    with store.lock(seq):
        store.save(rec)
    start_supervisor(store, seq)
    jid = job_id(rec)
    if not so.values.get("z"):
        print(jid)
        sys.stdout.flush()
    if str(so.wattrs.get("block", "")).lower() == "true":
        while True:
            r = store.load(seq)
            if r is None or r["state"] == "F":
                break
            time.sleep(0.1)
        status = (r or {}).get("exit_status")
        return int(status) % 256 if isinstance(status, int) else 0
    return 0


def make_record(o: SubmitOptions, script_text, default_name, workdir, environ, argv, cmd_args) -> dict:
    v = o.values
    queue = str(v.get("q", DEFAULT_QUEUE)).split("@")[0] or DEFAULT_QUEUE
    if queue not in queues():
        raise QsubError(f"qsub: {PBSE_TEXT[PBSE_UNKQUE]}", rc(PBSE_UNKQUE))
    rl, total_ncpus, chunk_ncpus, walltime = build_resource_list(o.resources)
    now = int(time.time())
    user = username()
    home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    rec: dict = {
        "seq": None, "server": server_name(), "name": str(v.get("N", default_name)),
        "owner": f"{user}@{hostname()}", "euser": user, "queue": queue,
        "account": v.get("A"), "project": v.get("P", "_pbs_project_default"),
        "state": "Q", "substate": SUBSTATE["Q"], "hold_types": "n",
        "ctime": now, "qtime": now, "etime": now, "mtime": now,
        "resource_list": rl, "ncpus": total_ncpus, "chunk_ncpus": chunk_ncpus, "walltime_limit": walltime,
        "join": v.get("j", "n"), "keep": v.get("k", "n"), "rerunable": "False" if v.get("r") == "n" else "True",
        "priority": v.get("p", "0"), "mail_points": v.get("m", "a"), "mail_users": v.get("M"),
        "shell": v.get("S"), "workdir": workdir, "home": home, "submit_host": hostname(),
        "submit_args": " ".join(argv + (["--"] + cmd_args if cmd_args is not None else [])),
        "depend": o.wattrs.get("depend"),
        "other_attrs": {k: x for k, x in o.wattrs.items() if k not in ("depend", "block")},
        "exit_status": None, "comment": None, "run_count": 0, "is_array": False,
        "opt_o": v.get("o"), "opt_e": v.get("e"),
        "executable": cmd_args[0] if cmd_args else None, "argument_list": cmd_args[1:] if cmd_args else None,
        "history": history_enabled(),
    }
    # Variable_List: PBS_O_* first, user variables, then PBS_O_QUEUE / PBS_O_HOST
    varlist = [("PBS_O_HOME", home), ("PBS_O_LANG", environ.get("LANG", "C")),
               ("PBS_O_LOGNAME", environ.get("LOGNAME", user)), ("PBS_O_PATH", environ.get("PATH", "/usr/bin:/bin")),
               ("PBS_O_MAIL", environ.get("MAIL", f"/var/spool/mail/{user}")),
               ("PBS_O_SHELL", environ.get("SHELL", "/bin/bash")), ("PBS_O_WORKDIR", workdir),
               ("PBS_O_SYSTEM", os.uname().sysname)]
    if v.get("V"):
        skip = {k for k, _ in varlist}
        varlist += [(k, x) for k, x in environ.items() if k not in skip and not k.startswith("BASH_FUNC_")]
    for k, x in o.variables:
        varlist = [(a, b) for a, b in varlist if a != k] + [(k, x)]
    varlist += [("PBS_O_QUEUE", queue), ("PBS_O_HOST", hostname())]
    rec["variable_list"] = varlist
    if v.get("h"):
        rec["hold_types"] = "u"
        rec["state"], rec["substate"] = "H", SUBSTATE["H"]
    if "J" in v:
        m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?(?:%(\d+))?", str(v["J"]))
        if not m or int(m.group(1)) >= int(m.group(2)) or (m.group(3) and int(m.group(3)) < 1) \
                or (m.group(4) and int(m.group(4)) < 1):
            raise QsubError("qsub: illegal -J value", 2)
        x, y, z = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        indices = list(range(x, y + 1, z))
        if len(indices) > MAX_ARRAY_SIZE:
            raise QsubError(f"qsub: {PBSE_TEXT[PBSE_MAXARRAYSIZE]}", rc(PBSE_MAXARRAYSIZE))
        rec["is_array"] = True
        rec["array_range"] = f"{x}-{y}" + (f":{z}" if z != 1 else "")
        rec["indices"] = indices
        rec["max_run"] = int(m.group(4)) if m.group(4) else None
        rec["subjobs"] = {str(i): {"state": "Q", "substate": SUBSTATE["Q"], "exit_status": None, "run_count": 0}
                          for i in indices}
    if rec["depend"]:
        deps = parse_depend(rec["depend"])
        if deps:
            rec["hold_types"] = "s" if rec["hold_types"] == "n" else rec["hold_types"] + "s"
            rec["state"], rec["substate"] = "H", SUBSTATE["H"]
    return rec


DEPEND_TYPES = ("after", "afterok", "afternotok", "afterany")


def parse_depend(text: str) -> list[tuple[str, JobRef]]:
    out = []
    for part in text.split(","):
        bits = part.split(":")
        kind = bits[0]
        if kind not in DEPEND_TYPES or len(bits) < 2:
            raise QsubError(f"qsub: illegal -W value (dependency type {kind!r} is not emulated)"
                            if kind not in DEPEND_TYPES else "qsub: illegal -W value", 2)
        for b in bits[1:]:
            try:
                out.append((kind, JobRef(b)))
            except ValueError:
                raise QsubError("qsub: illegal -W value", 2)
    return out


def check_depend(store: Store, text: str | None) -> None:
    if not text:
        return
    for _kind, ref in parse_depend(text):
        rec = visible(store.load(ref.seq)) if ref.ours() else None
        ok, _unit = find_unit(rec, ref)
        if not ok or ref.kind == "sub":
            raise QsubError(f"qsub: {PBSE_TEXT[PBSE_UNKJOBID]} {ref.full()}", rc(PBSE_UNKJOBID))


def finish_record(store: Store, rec: dict, seq: int, script_text: str) -> None:
    rec["seq"] = seq
    jid = job_id(rec)
    script = store.path("spool", f"{jid}.SC")
    with open(script, "w", errors="surrogateescape") as f:
        f.write(script_text)
    rec["script"] = script
    name = rec["name"]
    tag = f".{PBS_FILE_ARRAY_INDEX_TAG}" if rec["is_array"] else ""
    wd = rec["workdir"]
    rec["output_path"], rec["out_dest"] = resolve_path(rec.pop("opt_o"), f"{name}.o{seq}{tag}", wd, jid, "OU")
    rec["error_path"], rec["err_dest"] = resolve_path(rec.pop("opt_e"), f"{name}.e{seq}{tag}", wd, jid, "ER")
    if rec["depend"]:
        # PBS shows dependency ids completed with the server name
        parts = []
        for part in rec["depend"].split(","):
            bits = part.split(":")
            parts.append(":".join([bits[0]] + [JobRef(b).full() for b in bits[1:]]))
        rec["depend"] = ",".join(parts)


def start_supervisor(store: Store, seq: int) -> None:
    """Double fork + setsid so qsub returns at once and the supervisor is nobody's child."""
    me = os.path.abspath(__file__)
    log = store.path("logs", f"{seq}.log")
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.closerange(3, _max_fd())
            os.execv(sys.executable, [sys.executable, me, "_supervise", store.home, str(seq)])
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (ValueError, OSError):
        return 4096


# --------------------------------------------------------------------------------------------
# the supervisor: scheduler + MOM for one job (or one job array)
# --------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, idx, pid, out_spool, err_spool):
        self.idx = idx
        self.pid = pid              # also the pgid and session id
        self.out_spool = out_spool
        self.err_spool = err_spool
        self.kill_deadline = None
        self.walltime_killed = False
        self.exit_at = None         # when E turns into F/X


def units(rec: dict):
    if rec.get("is_array"):
        for i in rec["indices"]:
            yield i, rec["subjobs"][str(i)]
    else:
        yield None, rec


def unit_of(rec: dict, idx):
    return rec if idx is None else rec["subjobs"][str(idx)]


def subst_index(path: str, idx) -> str:
    return path if idx is None else path.replace(PBS_FILE_ARRAY_INDEX_TAG, str(idx))


def next_wait(rec: dict, runners: dict, now: float) -> float:
    """How long the supervisor may sleep: short when a deadline is near, else IDLE_POLL."""
    wait = IDLE_POLL
    limit = rec.get("walltime_limit")
    for r in runners.values():
        if r.kill_deadline is not None or r.exit_at is not None:
            return POLL
        if limit is not None:
            wait = min(wait, limit - elapsed_running(unit_of(rec, r.idx), now) + 0.01)
    if rec["state"] in ("Q", "B"):
        wait = min(wait, rec["etime"] + _env_float("PBS_EMU_SCHED_DELAY", 0.0) - now + 0.01)
    return max(POLL, wait)


def supervise(home: str, seq: int) -> None:
    store = Store(home)
    runners: dict = {}
    # SIGCHLD writes to this pipe, so a job's exit ends the select() below at once
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    try:
        while True:
            with store.lock(seq):
                rec = store.load(seq)
                if rec is None:
                    break
                now = time.time()
                changed = tick(store, rec, runners, now)
                if changed:
                    rec["mtime"] = int(now)
                    store.save(rec)
                done = rec["state"] == "F" and not runners
                wait = next_wait(rec, runners, now)
            if done:
                break
            select.select([wake_r], [], [], wait)
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 4096):
                    pass
    except Exception:
        traceback.print_exc()
        crash_cleanup(store, seq, runners)
    finally:
        for key in [job_id_key(seq, r.idx) for r in runners.values()] + [job_id_key(seq, None)]:
            store.release(key)
        if rec_purge_requested(store, seq):
            store.remove(seq)


def job_id_key(seq, idx) -> str:
    return f"{seq}" if idx is None else f"{seq}[{idx}]"


def history_enabled() -> bool:
    """Server attribute job_history_enable (PBS_EMU_JOB_HISTORY=0 turns it off: finished jobs vanish)."""
    return os.environ.get("PBS_EMU_JOB_HISTORY", "1").lower() not in ("0", "false", "no")


def rec_purge_requested(store: Store, seq: int) -> bool:
    rec = store.load(seq)
    return bool(rec and rec["state"] == "F" and rec.get("purge"))


def visible(rec: dict | None) -> dict | None:
    """What the commands may see: without job history a finished job is unknown to the server.
    (The record stays on disk so that dependent jobs can still read its exit status.)"""
    if rec is not None and rec["state"] == "F" and not rec.get("history", True):
        return None
    return rec


def crash_cleanup(store: Store, seq: int, runners: dict) -> None:
    with store.lock(seq):
        rec = store.load(seq)
        for r in runners.values():
            killpg(r.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(r.pid, 0)
        if rec is None:
            return
        now = int(time.time())
        for idx, unit in units(rec):
            if unit["state"] not in ("F", "X"):
                unit["state"] = "X" if idx is not None else "F"
                unit["exit_status"] = -1
                unit["comment"] = "pbsemu supervisor failed, see logs/%d.log" % seq
        rec["state"], rec["substate"], rec["obittime"] = "F", SUBSTATE["F"], now
        store.save(rec)


def tick(store: Store, rec: dict, runners: dict, now: float) -> bool:
    changed = False
    if rec["state"] == "F" and not runners:
        return False
    # dependencies (system hold 's')
    if "s" in rec["hold_types"] and rec["state"] != "F":
        changed |= check_dependencies(store, rec, now)
    # start what can start
    if rec["state"] in ("Q", "B") and rec["hold_types"] == "n" and not rec.get("delete_requested"):
        changed |= start_units(store, rec, runners, now)
    # watch what runs
    for _key, r in list(runners.items()):
        changed |= watch(store, rec, r, runners, now)
    # array parent bookkeeping
    if rec.get("is_array"):
        changed |= update_parent(rec, runners, now)
    return changed


def check_dependencies(store: Store, rec: dict, now: float) -> bool:
    satisfied = True
    for kind, ref in parse_depend(rec["depend"]):
        other = store.load(ref.seq)
        ok, unit = find_unit(other, ref)
        if not ok:
            continue                       # purged history: treat as satisfied
        finished = other["state"] == "F"
        status = other.get("exit_status")
        if kind == "after":
            started = bool(other.get("stime")) or finished
            satisfied &= started
        elif not finished:
            satisfied = False
        elif (kind == "afterok" and status != 0) or (kind == "afternotok" and status == 0):
            # can never be satisfied: PBS deletes the dependent job
            rec["state"], rec["substate"] = "F", SUBSTATE_TERMINATED
            rec["comment"] = f"Job deleted as result of dependency on job {job_id(other)}"
            rec["obittime"] = rec["history_timestamp"] = int(now)
            if rec.get("is_array"):
                for _i, u in units(rec):
                    u["state"] = "X"
            return True
    if satisfied:
        rec["hold_types"] = rec["hold_types"].replace("s", "") or "n"
        if rec["hold_types"] == "n":
            rec["state"], rec["substate"] = "Q", SUBSTATE["Q"]
            rec["etime"] = int(now)
        return True
    return False


def start_units(store: Store, rec: dict, runners: dict, now: float) -> bool:
    changed = False
    delay = _env_float("PBS_EMU_SCHED_DELAY", 0.0)
    if now < rec["etime"] + delay:
        return False
    max_run = rec.get("max_run")
    for idx, unit in units(rec):
        if unit["state"] != "Q":
            continue
        if max_run is not None and sum(1 for r in runners.values()) >= max_run:
            break
        need = rec["ncpus"]
        if not store.allocate(job_id_key(rec["seq"], idx), need, os.getpid()):
            msg = "Not Running: Insufficient amount of resource: ncpus"
            if unit.get("comment") != msg:
                unit["comment"] = msg
                changed = True
            break
        spawn_unit(store, rec, idx, unit, runners, now)
        changed = True
        if not rec.get("is_array"):
            break
    return changed


def job_environment(rec: dict, idx, jobid: str, tmpdir: str, nodefile: str) -> dict:
    env = {}
    for k, v in rec["variable_list"]:
        env[k] = v
    home = rec["home"]
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", dict(rec["variable_list"]).get("PBS_O_LANG", "C"))
    env.update({
        "HOME": home, "LOGNAME": rec["euser"], "USER": rec["euser"], "SHELL": rec.get("shell") or "/bin/bash",
        "PBS_JOBID": jobid, "PBS_JOBNAME": rec["name"], "PBS_QUEUE": rec["queue"],
        "PBS_JOBDIR": home, "PBS_NODEFILE": nodefile, "PBS_NODENUM": "0", "PBS_TASKNUM": "1",
        "PBS_MOMPORT": "15003", "PBS_ENVIRONMENT": "PBS_BATCH", "ENVIRONMENT": "BATCH",
        "PBS_O_WORKDIR": rec["workdir"], "TMPDIR": tmpdir,
        "NCPUS": str(rec["chunk_ncpus"]), "OMP_NUM_THREADS": str(rec["chunk_ncpus"]),
    })
    if idx is not None:
        env["PBS_ARRAY_INDEX"] = str(idx)
        env["PBS_ARRAY_ID"] = job_id(rec)
    return env


def spawn_unit(store: Store, rec: dict, idx, unit: dict, runners: dict, now: float) -> None:
    jobid = job_id(rec, idx)
    out_spool = store.path("spool", f"{jobid}.OU")
    err_spool = store.path("spool", f"{jobid}.ER")
    keep = rec.get("keep", "n")
    if "d" in keep:          # direct write (-k d...)
        if "o" in keep:
            out_spool = subst_index(rec["out_dest"], idx)
        if "e" in keep:
            err_spool = subst_index(rec["err_dest"], idx)
    if rec["join"] == "oe":
        err_spool = out_spool
    elif rec["join"] == "eo":
        out_spool = err_spool
    tmpdir = store.path("tmp", f"pbs.{jobid}")
    nodefile = store.path("aux", jobid)
    shell = rec.get("shell") or "/bin/bash"
    env = job_environment(rec, idx, jobid, tmpdir, nodefile)
    host = short_host()
    unit["run_count"] = unit.get("run_count", 0) + 1
    unit["stime"] = int(now)
    unit["exec_host"] = f"{host}/0" + (f"*{rec['chunk_ncpus']}" if rec["chunk_ncpus"] > 1 else "")
    unit["exec_vnode"] = f"({host}:ncpus={rec['chunk_ncpus']})"
    try:
        os.makedirs(tmpdir, exist_ok=True)
        with open(nodefile, "w") as f:
            f.write("localhost\n")
        pid = fork_job(shell, rec["script"], env, rec["home"], out_spool, err_spool)
    except OSError as e:
        # failed to start: JOB_EXEC_FAIL1
        store.release(job_id_key(rec["seq"], idx))
        unit["exit_status"] = -1
        unit["comment"] = f"job failed to start: {e.strerror or e}"
        unit["obittime"] = int(now)
        finalize_unit(rec, idx, unit, now)
        return
    unit["state"], unit["substate"] = "R", SUBSTATE["R"]
    unit["session_id"] = unit["pgid"] = pid
    unit["supervisor_pid"] = os.getpid()
    unit["comment"] = f"Job run at {run_comment_time(now)} on {unit['exec_vnode']}"
    unit["resources_used"] = {"cpupercent": "0", "cput": "00:00:00", "mem": "0kb",
                              "ncpus": str(rec["ncpus"]), "vmem": "0kb", "walltime": "00:00:00"}
    runners[idx] = Runner(idx, pid, out_spool, err_spool)


def fork_job(shell: str, script: str, env: dict, home: str, out_path: str, err_path: str) -> int:
    """fork + setsid + exec; a CLOEXEC pipe reports exec failures to the parent."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            os.setsid()
            os.chdir(home)
            fin = os.open(os.devnull, os.O_RDONLY)
            fout = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            ferr = fout if err_path == out_path else os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fin, 0)
            os.dup2(fout, 1)
            os.dup2(ferr, 2)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
            os.closerange(3, wfd)
            os.closerange(wfd + 1, _max_fd())
            os.execve(shell, [shell, script], env)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.write(wfd, f"{e.errno}:{e.strerror}".encode())
        except BaseException:
            pass
        os._exit(127)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    if data:
        os.waitpid(pid, 0)
        code, _, text = data.decode(errors="replace").partition(":")
        raise OSError(int(code) if code.isdigit() else errno.EIO, text)
    return pid


def elapsed_running(unit: dict, now: float) -> float:
    if not unit.get("stime"):
        return 0.0
    susp = unit.get("suspended_total", 0.0)
    if unit.get("suspended_since"):
        susp += now - unit["suspended_since"]
    end = unit.get("obittime") or now
    return max(0.0, end - unit["stime"] - susp)


def watch(store: Store, rec: dict, r: Runner, runners: dict, now: float) -> bool:
    unit = unit_of(rec, r.idx)
    changed = False
    if r.exit_at is not None:
        # exiting: output already staged, now leave E
        if now >= r.exit_at:
            finalize_unit(rec, r.idx, unit, now)
            del runners[r.idx]
            return True
        return False
    # deletion requested by qdel (qdel itself already sent SIGTERM)
    if unit.get("delete_requested") and r.kill_deadline is None:
        r.kill_deadline = unit["delete_requested"] + _env_float("PBS_EMU_KILL_DELAY", 2.0)
    # walltime
    limit = rec.get("walltime_limit")
    if limit is not None and not r.walltime_killed and r.kill_deadline is None:
        used = elapsed_running(unit, now)
        if used > limit:
            r.walltime_killed = True
            with contextlib.suppress(OSError):
                with open(r.err_spool, "a") as f:
                    f.write(f"=>> PBS: job killed: walltime {int(used)} exceeded limit {limit}\n")
            killpg(r.pid, signal.SIGTERM)
            killpg(r.pid, signal.SIGCONT)
            r.kill_deadline = now + _env_float("PBS_EMU_KILL_DELAY", 2.0)
    if r.kill_deadline is not None and now >= r.kill_deadline:
        killpg(r.pid, signal.SIGKILL)
    # has the top process ended?  WNOWAIT keeps the zombie so the pgid cannot be reused yet
    try:
        info = os.waitid(os.P_PID, r.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        info = None
        gone = True
    else:
        gone = info is not None
    if not gone:
        return changed
    kill_group_and_wait(r.pid)             # like MOM: nothing of the job survives its shell
    ru = None
    status = None
    with contextlib.suppress(ChildProcessError):
        _pid, status, ru = os.wait4(r.pid, 0)
    if status is None:
        code = -1
    elif os.WIFSIGNALED(status):
        code = 256 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    if r.walltime_killed:
        code = _env_int("PBS_EMU_WALLTIME_EXIT_STATUS", -29)     # JOB_EXEC_KILL_WALLTIME
    store.release(job_id_key(rec["seq"], r.idx))
    unit["exit_status"] = code
    unit["obittime"] = int(now)
    if unit.get("suspended_since"):
        unit["suspended_total"] = unit.get("suspended_total", 0.0) + now - unit["suspended_since"]
        unit["suspended_since"] = None
    wall = elapsed_running(unit, now)
    cput = (ru.ru_utime + ru.ru_stime) if ru else 0.0
    unit["resources_used"] = {
        "cpupercent": str(int(100 * cput / wall) if wall > 0 else 0), "cput": fmt_hms(cput),
        "mem": f"{ru.ru_maxrss if ru else 0}kb", "ncpus": str(rec["ncpus"]),
        "vmem": f"{ru.ru_maxrss if ru else 0}kb", "walltime": fmt_hms(wall)}
    unit["state"], unit["substate"] = "E", SUBSTATE["E"]
    deliver_output(store, rec, r)
    r.exit_at = now + _env_float("PBS_EMU_EXITING_SECONDS", 0.1)
    return True


def deliver_output(store: Store, rec: dict, r: Runner) -> None:
    idx = r.idx
    pairs = []
    keep = rec.get("keep", "n")
    out_dest = subst_index(rec["out_dest"], idx)
    err_dest = subst_index(rec["err_dest"], idx)
    jobid = job_id(rec, idx)
    if "o" in keep and "d" not in keep:
        out_dest = os.path.join(rec["home"], os.path.basename(out_dest))
    if "e" in keep and "d" not in keep:
        err_dest = os.path.join(rec["home"], os.path.basename(err_dest))
    if rec["join"] == "eo":
        pairs.append((r.err_spool, err_dest))
    else:
        pairs.append((r.out_spool, out_dest))
        if rec["join"] != "oe":
            pairs.append((r.err_spool, err_dest))
    for spool, dest in pairs:
        if os.path.abspath(spool) == os.path.abspath(dest):
            continue                                  # direct write
        if not os.path.exists(spool):
            open(spool, "a").close()
        try:
            shutil.copyfile(spool, dest)
            os.unlink(spool)
        except OSError:
            with contextlib.suppress(OSError):
                shutil.move(spool, store.path("undelivered", os.path.basename(spool)))
    with contextlib.suppress(OSError):
        shutil.rmtree(store.path("tmp", f"pbs.{jobid}"))
    with contextlib.suppress(OSError):
        os.unlink(store.path("aux", jobid))


def finalize_unit(rec: dict, idx, unit: dict, now: float) -> None:
    comment = unit.get("comment") or ""
    if comment.startswith("Job run at") and not comment.endswith("finished"):
        unit["comment"] += " and finished"
    unit["pgid"] = None
    if idx is None:
        rec["state"], rec["substate"] = "F", SUBSTATE["F"]
        rec["history_timestamp"] = int(now)
    else:
        unit["state"], unit["substate"] = "X", SUBSTATE["X"]


def update_parent(rec: dict, runners: dict, now: float) -> bool:
    subs = [rec["subjobs"][str(i)] for i in rec["indices"]]
    changed = False
    if rec["state"] in ("Q", "H") and any(s["state"] != "Q" and s.get("stime") for s in subs):
        rec["state"], rec["substate"] = "B", SUBSTATE["B"]
        rec["stime"] = min(s["stime"] for s in subs if s.get("stime"))
        rec["comment"] = f"Job Array Began at {run_comment_time(rec['stime'])}"
        changed = True
    if rec["state"] != "F" and all(s["state"] == "X" for s in subs) and not runners:
        codes = [s.get("exit_status") for s in subs if s.get("exit_status") is not None]
        # chk_array_doneness: 0 all ok, 1 some failed, 2 some did not run properly (negative)
        rec["exit_status"] = 2 if any(c < 0 for c in codes) else (1 if any(c > 0 for c in codes) else 0)
        rec["state"], rec["substate"] = "F", SUBSTATE["F"]
        rec["obittime"] = rec["history_timestamp"] = int(now)
        if rec.get("comment", "") and rec["comment"].startswith("Job Array Began"):
            rec["comment"] += " and finished"
        changed = True
    return changed


# --------------------------------------------------------------------------------------------
# attributes as the server reports them (order follows real qstat -f output)
# --------------------------------------------------------------------------------------------


def render_varlist(pairs: list) -> str:
    return ",".join(f"{k}={escape_var_value(str(v))}" for k, v in pairs)


def array_state_count(rec: dict) -> str:
    ct = {"Q": 0, "R": 0, "E": 0, "X": 0}
    for i in rec["indices"]:
        st = rec["subjobs"][str(i)]["state"]
        ct["R" if st == "S" else st] = ct.get("R" if st == "S" else st, 0) + 1
    return f"Queued:{ct['Q']} Running:{ct['R']} Exiting:{ct['E']} Expired:{ct['X']} "


def job_attrs(rec: dict, idx=None, now: float | None = None) -> list[tuple[str, str | None, str]]:
    now = now or time.time()
    unit = unit_of(rec, idx)
    attrs: list[tuple[str, str | None, str]] = []

    def add(name, value, resource=None):
        if value is not None:
            attrs.append((name, resource, str(value)))

    add("Job_Name", rec["name"])
    add("Job_Owner", rec["owner"])
    ru = unit.get("resources_used")
    if ru:
        ru = dict(ru)
        if unit.get("state") in ("R", "S"):
            ru["walltime"] = fmt_hms(elapsed_running(unit, now))
        for k in sorted(ru):
            add("resources_used", ru[k], k)
    add("job_state", unit_state(rec, idx))
    add("queue", rec["queue"])
    add("server", rec["server"])
    add("Account_Name", rec.get("account"))
    add("Checkpoint", "u")
    add("ctime", ctime_str(rec["ctime"]))
    add("depend", rec.get("depend"))
    add("Error_Path", subst_index(rec["error_path"], idx))
    if unit.get("exec_host") and unit_state(rec, idx) != "Q":
        add("exec_host", unit["exec_host"])
        add("exec_vnode", unit["exec_vnode"])
    add("Hold_Types", rec["hold_types"])
    add("Join_Path", rec["join"])
    add("Keep_Files", rec["keep"])
    add("Mail_Points", rec["mail_points"])
    add("Mail_Users", rec.get("mail_users"))
    add("mtime", ctime_str(rec["mtime"]))
    add("Output_Path", subst_index(rec["output_path"], idx))
    add("Priority", rec["priority"])
    add("qtime", ctime_str(rec["qtime"]))
    add("Rerunable", rec["rerunable"])
    for k, v in rec["resource_list"].items():
        add("Resource_List", v, k)
    add("stime", ctime_str(unit.get("stime")))
    add("obittime", ctime_str(unit.get("obittime")) if unit_state(rec, idx) in ("E", "F", "X") else None)
    if unit.get("session_id") and unit_state(rec, idx) in ("R", "S", "E"):
        add("session_id", unit["session_id"])
    if unit.get("stime"):
        add("jobdir", rec["home"])
    add("substate", unit.get("substate", SUBSTATE.get(unit_state(rec, idx), 0)))
    varlist = list(rec["variable_list"])
    if idx is not None:
        varlist += [("PBS_ARRAY_INDEX", str(idx)), ("PBS_ARRAY_ID", job_id(rec))]
    add("Variable_List", render_varlist(varlist))
    add("comment", unit.get("comment"))
    add("etime", ctime_str(rec["etime"]))
    if unit.get("run_count"):
        add("run_count", unit["run_count"])
    for k, v in sorted(rec.get("other_attrs", {}).items()):
        add(k, v)
    if unit.get("exit_status") is not None and unit_state(rec, idx) in ("E", "F", "X"):
        add("Exit_status", unit["exit_status"])
    add("Submit_arguments", rec["submit_args"])
    if rec.get("executable"):
        add("executable", f"<jsdl-hpcpa:Executable>{rec['executable']}</jsdl-hpcpa:Executable>")
        if rec.get("argument_list"):
            add("argument_list", "".join(f"<jsdl-hpcpa:Argument>{a}</jsdl-hpcpa:Argument>"
                                         for a in rec["argument_list"]))
    if rec.get("is_array") and idx is None:
        add("array", "True")
        add("array_state_count", array_state_count(rec))
        add("array_indices_submitted", rec["array_range"])
        remaining = [i for i in rec["indices"] if rec["subjobs"][str(i)]["state"] == "Q"]
        if remaining and rec["state"] != "F":
            add("array_indices_remaining", range_string(remaining))
        if rec.get("max_run"):
            add("max_run_subjobs", rec["max_run"])
    if idx is not None:
        add("array_id", job_id(rec))
        add("array_index", idx)
    if rec["state"] == "F":
        add("history_timestamp", rec.get("history_timestamp"))
    add("project", rec["project"])
    add("Submit_Host", rec["submit_host"])
    return attrs


# --------------------------------------------------------------------------------------------
# qstat rendering
# --------------------------------------------------------------------------------------------

CHAR_LINE_LIMIT = 78


def prt_attr_text(name: str, resource: str | None, value: str) -> str:
    """Port of qstat.c prt_attr() for the default format (breaks long values at commas)."""
    out = ["    ", name]
    start = len(name) + 7
    if resource:
        start += len(resource) + 1
        out.append("." + resource)
    out.append(" = ")
    tokens = [t for t in value.split(",") if t]          # strtok semantics
    first = True
    for n, tok in enumerate(tokens):
        if len(tok) + start < CHAR_LINE_LIMIT:
            out.append(tok)
            start += len(tok)
        else:
            if not first:
                out.append("\n\t")
                start = 9
            for ch in tok:
                out.append(ch)
                start += 1
                if start > CHAR_LINE_LIMIT:
                    start = 8
                    out.append("\n\t")
        if n + 1 < len(tokens):
            first = False
            out.append(",")
    return "".join(out)


def full_text(jid: str, attrs) -> str:
    return f"Job Id: {jid}\n" + "\n".join(prt_attr_text(n, r, v) for n, r, v in attrs) + "\n\n"


def table_row(jid: str, attrs, wide: bool) -> str:
    a = {(n, r): v for n, r, v in attrs}
    name = a.get(("Job_Name", None), "")
    owner = a.get(("Job_Owner", None), "").split("@")[0]
    timeu = a.get(("resources_used", "cput"), "0")
    state = a.get(("job_state", None), "")
    queue = a.get(("queue", None), "").split("@")[0]
    c = jid.find(".")
    if c >= 0:
        d = jid.find(".", c + 1)
        if d >= 0:
            jid = jid[:d]
    jl, nl, ol, ql = (30, 15, 15, 15) if wide else (17, 16, 16, 16)
    if len(jid) > jl:
        jid = jid[:jl - 1] + "*"
    if len(name) >= nl:
        name = name[:nl - 1] + "*"
    if len(owner) > ol:
        owner = owner[:ol - 1] + "*"
    if len(timeu) > 8:
        timeu = timeu[:7] + "*"
    if len(state) > 1:
        state = state[:1]
    if len(queue) > ql:
        queue = queue[:ql - 1] + "*"
    return "%-*s %-*s %-*s  %8s %1s %-*s" % (jl, jid, nl, name, ol, owner, timeu, state, ql, queue)


TABLE_HEADER = ("Job id            Name             User              Time Use S Queue\n"
                "----------------  ---------------- ----------------  -------- - -----\n")
TABLE_HEADER_WIDE = ("Job id                         Name            User             Time Use S Queue\n"
                     "-----------------------------  --------------- ---------------  -------- - ---------------\n")

# JSON: a port of src/lib/Libjson/pbs_json.c (generate_json, add_json_node, strdup_escape)
_STRTOD_RE = re.compile(
    r"^\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)\s*$", re.I)


def _strtod_value(s: str) -> float:
    t = s.strip()
    if re.match(r"^[+-]?0[xX]", t):
        sign = -1.0 if t.startswith("-") else 1.0
        return sign * float.fromhex(t.lstrip("+-"))
    return float(t)


def json_escape(s: str, mode: str) -> str:
    table = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch in table:
            out.append(table[ch])
            i += 1
        elif mode == "legacy" or ch not in "\"\\":
            out.append(ch)               # legacy JSON_ESCAPE leaves " and \ as they are
            i += 1
        elif ch == '"':
            # escaped unless preceded by a backslash; a leading " is never escaped (bufstr >= orig_str)
            out.append('\\"' if i - 1 >= 0 and s[i - 1] != "\\" else '"')
            i += 1
        else:  # backslash
            if i + 1 < n and s[i + 1] in "',":
                out.append(s[i + 1])
                i += 2
            else:
                out.append("\\")
                i += 1
                if i < n:
                    out.append(s[i])
                    i += 1
    return "".join(out)


def json_value(s: str | None, mode: str) -> str | None:
    """add_json_node(JSON_VALUE, JSON_NULL, JSON_ESCAPE, key, value) + generate_json for one value."""
    if s is None:
        return None                      # JSON_NULL: generate_json prints nothing
    whitespace_only = s.strip() == ""
    if not whitespace_only and _STRTOD_RE.match(s):
        try:
            val = _strtod_value(s)
        except (ValueError, OverflowError):
            val = None
        if val is not None:
            if mode == "legacy":
                if val == val and val not in (float("inf"), float("-inf")) and val == int(val):
                    return "%d" % int(val)
                return "%f" % val
            if s[0] != "0" or val < 1:
                return s                 # JSON_NUMERIC: printed verbatim
    return '"' + json_escape(s, mode) + '"'


def json_varlist_pairs(value: str, mode: str) -> list[tuple[str, str | None]]:
    """prt_attr's JSON branch for Variable_List: split at unescaped commas, then at the first '='."""
    pairs = []
    i, n = 0, len(value)
    while i < n:
        key, val = [], None
        cur = key
        while i < n and value[i] != ",":
            if value[i] == "\\" and i + 1 < n and value[i + 1] == ",":
                if mode == "legacy":
                    cur.append("\\")
                i += 1
            if val is None and value[i] == "=":
                val = []
                cur = val
                i += 1
                if i >= n:
                    break
            cur.append(value[i])        # note: copies the char after '=' even if it is ','
            i += 1
        pairs.append(("".join(key), None if val is None else "".join(val)))
        if i < n:
            i += 1
    return pairs


_CJSON_NUMBER_RE = re.compile(r"^\s*[-+0-9.eE]+\s*$")


def cjson_value(s: str):
    """pbs_json_insert_parsed(): cJSON_ParseWithOpts(value) or, failing that, the string itself."""
    t = s.strip()
    if t and t[0] in "-0123456789" and _CJSON_NUMBER_RE.match(t):
        try:
            return float(t.replace("+", "")) if t.count("+") <= 1 else s
        except ValueError:
            return s
    if t in ("true", "false", "null") or (t[:1] in "[{\"" and t):
        try:
            return json.loads(t)
        except ValueError:
            return s
    return s


def cjson_print(value, depth: int = 0) -> str:
    """cJSON_Print(): tabs, '"key":\tvalue', integers without a fraction."""
    if isinstance(value, dict):
        if not value:
            return "{\n" + "\t" * depth + "}"
        inner = ",\n".join("\t" * (depth + 1) + json.dumps(k, ensure_ascii=False) + ":\t" + cjson_print(v, depth + 1)
                           for k, v in value.items())
        return "{\n" + inner + "\n" + "\t" * depth + "}"
    if isinstance(value, list):
        return "[" + ", ".join(cjson_print(v, depth + 1) for v in value) + "]"
    if value is True or value is False or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        if float(value) == int(value) and abs(value) < 2 ** 53:
            return str(int(value))
        text = "%1.15g" % value
        return text if float(text) == value else "%1.17g" % value
    return json.dumps(value, ensure_ascii=False)


def cjson_document(job_list: list[tuple[str, list]]) -> str:
    doc: dict = {"timestamp": int(time.time()), "pbs_version": pbs_version(), "pbs_server": server_name()}
    if job_list:
        jobs: dict = {}
        for jid, attrs in job_list:
            job: dict = {}
            for name, resource, value in attrs:
                if name == "Variable_List":
                    job[name] = {k: cjson_value(v) for k, v in json_varlist_pairs(value, "2022") if v is not None}
                elif resource:
                    job.setdefault(name, {})[resource] = cjson_value(value)
                else:
                    job[name] = cjson_value(value)
            jobs[jid] = job
        doc["Jobs"] = jobs
    return cjson_print(doc) + "\n"


def json_document(job_list: list[tuple[str, list]], mode: str) -> str:
    if mode == "cjson":
        return cjson_document(job_list)
    nodes: list[tuple] = [("val", "timestamp", str(int(time.time()))),
                          ("val", "pbs_version", json.dumps(pbs_version())),
                          ("val", "pbs_server", json.dumps(server_name()))]
    if job_list:
        nodes.append(("obj", "Jobs"))
        for jid, attrs in job_list:
            nodes.append(("obj", jid))
            prev_resc = None
            for name, resource, value in attrs:
                if name == "Variable_List":
                    if prev_resc:
                        nodes.append(("end",))
                        prev_resc = None
                    nodes.append(("obj", name))
                    for k, v in json_varlist_pairs(value, mode):
                        nodes.append(("val", k, json_value(v, mode)))
                    nodes.append(("end",))
                elif resource:
                    if prev_resc and prev_resc != name:
                        nodes.append(("end",))
                        prev_resc = None
                    if prev_resc is None:
                        nodes.append(("obj", name))
                        prev_resc = name
                    nodes.append(("val", resource, json_value(value, mode)))
                else:
                    if prev_resc:
                        nodes.append(("end",))
                        prev_resc = None
                    nodes.append(("val", name, json_value(value, mode)))
            if prev_resc:
                nodes.append(("end",))
            nodes.append(("end",))
        nodes.append(("end",))
    out = ["{"]
    indent, comma = 4, False
    for node in nodes:
        if node[0] == "obj":
            out.append(",\n" if comma else "\n")
            out.append(" " * indent + f'"{node[1]}":{{')
            indent += 4
            comma = False
        elif node[0] == "end":
            indent -= 4
            out.append("\n" + " " * indent + "}")
            comma = True
        else:
            if node[2] is None:
                continue
            out.append(",\n" if comma else "\n")
            out.append(" " * indent + f'"{node[1]}":{node[2]}')
            comma = True
    out.append("\n}\n")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# qstat
# --------------------------------------------------------------------------------------------

QSTAT_USAGE = """usage:
qstat [-f] [-J] [-p] [-t] [-x] [-E] [-F format | -w] [-D delim] [ job_identifier... | destination... ]
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]
\t[ job_identifier... | destination... ]
qstat -Q [-f] [-F format] [-D delim] [ destination... ]
qstat -q [-G|-M] [ destination... ]
qstat -B [-f] [-F format] [-D delim] [ server_name... ]
qstat --version
"""
QSTAT_OPTS = "ainpqrstwxu:fGHJMQEBW:T1F:D:"
QSTAT_NOT_EMULATED = set("ainpqrsuGHJMQBWT1D")


def statuses_for(rec: dict, idx, with_subjobs: bool, now: float):
    out = [(job_id(rec, idx), job_attrs(rec, idx, now))]
    if rec.get("is_array") and idx is None and with_subjobs:
        for i in rec["indices"]:
            out.append((job_id(rec, i), job_attrs(rec, i, now)))
    return out


def main_qstat(argv: list[str]) -> int:
    if "--version" in argv:
        print(f"pbs_version = {pbs_version()}")
        return 0
    try:
        opts, operands = getopt.gnu_getopt(argv, QSTAT_OPTS)
    except getopt.GetoptError as e:
        err(_getopt_error("qstat", e))
        sys.stderr.write(QSTAT_USAGE)
        return 2
    full = hist = subjobs = wide = express = False
    fmt = "default"
    errflg = 0
    for o, v in opts:
        o = o[1:]
        if o in QSTAT_NOT_EMULATED:
            err(f"qstat: option -{o} is not emulated by pbsemu")
            return 2
        if o == "f":
            full = True
        elif o == "x":
            hist = True
        elif o == "t":
            subjobs = True
        elif o == "w":
            wide = True
        elif o == "E":
            express = True
        elif o == "F":
            if v.lower() in ("default", "json"):
                fmt = v.lower()
            elif v.lower() == "dsv":
                err("qstat: -F dsv is not emulated by pbsemu")
                return 2
            else:
                errflg += 1
    if not (fmt == "default" or full):
        sys.stderr.write("qstat: conflicting options.\n")
        errflg += 1
    if wide and fmt != "default":
        sys.stderr.write("qstat: option w cannot be used with -F\n")
        errflg += 1
    if errflg:
        sys.stderr.write(QSTAT_USAGE)
        return 2

    store = Store()
    now = time.time()
    mode = json_mode()
    json_jobs: list = []
    out = sys.stdout
    any_failed = 0

    def show(stats: list, header: bool) -> None:
        if fmt == "json":
            json_jobs.extend(stats)
        elif full:
            for jid, attrs in stats:
                out.write(full_text(jid, attrs))
        else:
            if header:
                out.write(TABLE_HEADER_WIDE if wide else TABLE_HEADER)
            for jid, attrs in stats:
                out.write(table_row(jid, attrs, wide) + "\n")

    if not operands:
        stats = []
        for seq in store.seqs():
            rec = visible(store.load(seq))
            if rec is None or (is_history(rec) and not hist):
                continue
            stats.extend(statuses_for(rec, None, subjobs, now))
        if stats:
            show(stats, True)
    else:
        if express:
            def key(t):
                try:
                    r = JobRef(t)
                    return (0, r.seq, -1 if r.index is None else r.index)
                except ValueError:
                    return (1, 0, 0)
            operands = sorted(operands, key=key)
        batch: list = []
        for n, operand in enumerate(operands):
            if not operand[:1].isdigit():
                # a destination: queue, queue@server or @server (pbs_isjobid() is false)
                queue, _, srv = operand.partition("@")
                if (queue and queue not in queues()) or (srv and srv != server_name()):
                    err(f"qstat: {PBSE_TEXT[PBSE_UNKQUE]} {operand}")
                    any_failed = rc(PBSE_UNKQUE)
                    continue
                stats = []
                for seq in store.seqs():
                    rec = visible(store.load(seq))
                    if rec is None or (is_history(rec) and not hist) or (queue and rec["queue"] != queue):
                        continue
                    stats.extend(statuses_for(rec, None, subjobs, now))
                if stats:
                    show(stats, header=(n == 0))
                continue
            try:
                ref = JobRef(operand)
            except ValueError:
                err(f"qstat: illegally formed job identifier: {operand}")
                any_failed = 1
                continue
            rec = visible(store.load(ref.seq)) if ref.ours() else None
            exists, _unit = find_unit(rec, ref)
            if not exists:
                err(f"qstat: {PBSE_TEXT[PBSE_UNKJOBID]} {ref.full()}")
                any_failed = rc(PBSE_UNKJOBID)
                continue
            if is_history(rec) and not hist:
                err(f"qstat: {ref.full()} {PBSE_TEXT[PBSE_HISTJOBID]}, "
                    "use -x or -H to obtain historical job information")
                any_failed = rc(PBSE_HISTJOBID)
                continue
            stats = statuses_for(rec, ref.index, subjobs, now)
            if express:
                batch.extend(stats)
                continue
            # qstat.c asks the server for its header only with the first operand
            show(stats, header=(n == 0))
        if express and batch:
            show(batch, True)
    if fmt == "json":
        out.write(json_document(json_jobs, mode))
    out.flush()
    return any_failed


# --------------------------------------------------------------------------------------------
# qdel / qsig / qrls
# --------------------------------------------------------------------------------------------

QDEL_USAGE = "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n\tqdel --version\n"
QSIG_USAGE = "usage: qsig [-s signal] job_identifier...\n       qsig --version\n"
QRLS_USAGE = "usage: qrls [-h hold_list] job_identifier...\n       qrls --version\n"


def running_units(rec: dict, ref: JobRef):
    """Units a request on `ref` acts on."""
    if ref.kind == "sub":
        return [(ref.index, rec["subjobs"][str(ref.index)])]
    return list(units(rec)) if rec.get("is_array") else [(None, rec)]


def main_qdel(argv: list[str]) -> int:
    if "--version" in argv:
        print(f"pbs_version = {pbs_version()}")
        return 0
    try:
        opts, ids = getopt.getopt(argv, "W:x")
    except getopt.GetoptError as e:
        err(_getopt_error("qdel", e))
        sys.stderr.write(QDEL_USAGE)
        return 2
    force = purge = False
    errflg = 0
    for o, v in opts:
        if o == "-W":
            if v == "force":
                force = True
            elif re.fullmatch(r"suppress_email=\d+", v) or v.isdigit():
                pass
            else:
                err("qdel: illegal -W value")
                errflg += 1
        elif o == "-x":
            purge = True
    if errflg or not ids:
        sys.stderr.write(QDEL_USAGE)
        return 2
    store = Store()
    any_failed = 0
    for text in ids:
        try:
            ref = JobRef(text)
        except ValueError:
            err(f"qdel: illegally formed job identifier: {text}")
            any_failed = 1
            continue
        code = delete_one(store, ref, force, purge)
        if code:
            err(f"qdel: {PBSE_TEXT[code]} {ref.full()}")
            any_failed = rc(code)
    return any_failed


def delete_one(store: Store, ref: JobRef, force: bool, purge: bool) -> int:
    if not ref.ours():
        return PBSE_UNKJOBID
    with store.lock(ref.seq):
        rec = visible(store.load(ref.seq))
        exists, unit = find_unit(rec, ref)
        if not exists:
            return PBSE_UNKJOBID
        now = time.time()
        if rec["state"] == "F":
            if purge and ref.kind != "sub":
                store.remove(ref.seq)
                return 0
            return PBSE_HISTJOBID
        if ref.kind == "sub" and unit["state"] == "X":
            return PBSE_HISTJOBID
        targets = running_units(rec, ref)
        if ref.kind != "sub" and rec["state"] == "E" and not force:
            return PBSE_BADSTATE
        if ref.kind == "sub" and unit["state"] == "E" and not force:
            return PBSE_BADSTATE
        if purge:
            rec["purge"] = True
        if ref.kind != "sub":
            rec["delete_requested"] = now
        for idx, u in targets:
            st = u["state"]
            if st in ("Q", "H", "W"):
                if idx is None:
                    rec["state"], rec["substate"] = "F", SUBSTATE_TERMINATED
                    rec["obittime"] = rec["history_timestamp"] = int(now)
                else:
                    u["state"], u["substate"] = "X", SUBSTATE_TERMINATED
            elif st in ("R", "S", "E"):
                if st != "E" or force:
                    u["delete_requested"] = u.get("delete_requested") or now
                    if force:
                        killpg(u.get("pgid"), signal.SIGKILL)
                    else:
                        killpg(u.get("pgid"), signal.SIGTERM)
                        killpg(u.get("pgid"), signal.SIGCONT)   # a suspended job must see the TERM
                    u["state"], u["substate"] = "E", SUBSTATE["E"]
        if rec.get("is_array") and rec["state"] in ("Q", "H") and all(
                rec["subjobs"][str(i)]["state"] == "X" for i in rec["indices"]):
            rec["state"], rec["substate"] = "F", SUBSTATE_TERMINATED
            rec["obittime"] = rec["history_timestamp"] = int(now)
        rec["mtime"] = int(now)
        store.save(rec)
    return 0


SIGNAL_NAMES = {name[3:]: getattr(signal, name) for name in dir(signal)
                if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signal, name), int)}


def parse_signal(text: str) -> int | str | None:
    t = text.strip()
    if t.lower() in ("suspend", "resume", "admin-suspend", "admin-resume"):
        return t.lower().replace("admin-", "")
    if t.isdigit():
        n = int(t)
        return n if 0 < n < signal.NSIG else None
    name = t.upper()
    if name.startswith("SIG"):
        name = name[3:]
    return SIGNAL_NAMES.get(name)


def main_qsig(argv: list[str]) -> int:
    if "--version" in argv:
        print(f"pbs_version = {pbs_version()}")
        return 0
    try:
        opts, ids = getopt.getopt(argv, "s:")
    except getopt.GetoptError as e:
        err(_getopt_error("qsig", e))
        sys.stderr.write(QSIG_USAGE)
        return 2
    if not ids:
        sys.stderr.write(QSIG_USAGE)
        return 2
    sig_text = "SIGTERM"
    for _o, v in opts:
        sig_text = v
    sig = parse_signal(sig_text)
    store = Store()
    any_failed = 0
    for text in ids:
        try:
            ref = JobRef(text)
        except ValueError:
            err(f"qsig: illegally formed job identifier: {text}")
            any_failed = 1
            continue
        code = signal_one(store, ref, sig)
        if code == PBSE_HISTJOBID:
            err(f"qsig: {PBSE_TEXT[code]}")        # prt_job_err formats the server text with the id: no %s
            any_failed = rc(code)
        elif code:
            err(f"qsig: {PBSE_TEXT[code]} {ref.full()}")
            any_failed = rc(code)
    return any_failed


def signal_one(store: Store, ref: JobRef, sig) -> int:
    if not ref.ours():
        return PBSE_UNKJOBID
    with store.lock(ref.seq):
        rec = visible(store.load(ref.seq))
        exists, unit = find_unit(rec, ref)
        if not exists:
            return PBSE_UNKJOBID
        if rec["state"] == "F" or (ref.kind == "sub" and unit["state"] == "X"):
            return PBSE_HISTJOBID
        if sig is None:
            return PBSE_UNKSIG
        targets = [(i, u) for i, u in running_units(rec, ref) if u["state"] in ("R", "S")]
        if not targets:
            return PBSE_BADSTATE
        now = time.time()
        if sig == "suspend":
            if any(u["state"] != "R" for _i, u in targets) and ref.kind != "parent":
                return PBSE_BADSTATE
            for _i, u in targets:
                if u["state"] == "R" and killpg(u.get("pgid"), signal.SIGSTOP):
                    u["state"], u["substate"] = "S", SUBSTATE["S"]
                    u["suspended_since"] = now
        elif sig == "resume":
            if any(u["state"] != "S" for _i, u in targets) and ref.kind != "parent":
                return PBSE_BADSTATE
            for _i, u in targets:
                if u["state"] == "S" and killpg(u.get("pgid"), signal.SIGCONT):
                    u["state"], u["substate"] = "R", SUBSTATE["R"]
                    u["suspended_total"] = u.get("suspended_total", 0.0) + now - (u.get("suspended_since") or now)
                    u["suspended_since"] = None
        else:
            for _i, u in targets:
                killpg(u.get("pgid"), sig)
        rec["mtime"] = int(now)
        store.save(rec)
    return 0


def main_qrls(argv: list[str]) -> int:
    if "--version" in argv:
        print(f"pbs_version = {pbs_version()}")
        return 0
    try:
        opts, ids = getopt.getopt(argv, "h:")
    except getopt.GetoptError as e:
        err(_getopt_error("qrls", e))
        sys.stderr.write(QRLS_USAGE)
        return 2
    holds = "u"
    for _o, v in opts:
        holds = v
    if not ids or not re.fullmatch(r"[uosp]+", holds):
        sys.stderr.write(QRLS_USAGE)
        return 2
    store = Store()
    any_failed = 0
    for text in ids:
        try:
            ref = JobRef(text)
        except ValueError:
            err(f"qrls: illegally formed job identifier: {text}")
            any_failed = 1
            continue
        code = release_one(store, ref, holds)
        if code == PBSE_HISTJOBID:
            err(f"qrls: {PBSE_TEXT[code]}")
            any_failed = rc(code)
        elif code:
            err(f"qrls: {PBSE_TEXT[code]} {ref.full()}")
            any_failed = rc(code)
    return any_failed


def release_one(store: Store, ref: JobRef, holds: str) -> int:
    if not ref.ours():
        return PBSE_UNKJOBID
    with store.lock(ref.seq):
        rec = visible(store.load(ref.seq))
        exists, _unit = find_unit(rec, ref)
        if not exists:
            return PBSE_UNKJOBID
        if rec["state"] == "F":
            return PBSE_HISTJOBID
        if ref.kind == "sub":
            return PBSE_BADSTATE           # holds apply to the array as a whole
        remaining = "".join(c for c in rec["hold_types"] if c not in holds and c != "n") or "n"
        if remaining != rec["hold_types"]:
            rec["hold_types"] = remaining
            if remaining == "n" and rec["state"] == "H":
                rec["state"], rec["substate"] = "Q", SUBSTATE["Q"]
                rec["etime"] = int(time.time())
            rec["mtime"] = int(time.time())
            store.save(rec)
    return 0


# --------------------------------------------------------------------------------------------

COMMANDS = {"qsub": main_qsub, "qstat": main_qstat, "qdel": main_qdel, "qsig": main_qsig, "qrls": main_qrls}


def run_command(name: str) -> None:
    try:
        code = COMMANDS[name](sys.argv[1:])
    except BrokenPipeError:
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_supervise":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        supervise(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.stderr.write("pbsemu.py is a library; use the commands in bin/\n")
    sys.exit(2)
