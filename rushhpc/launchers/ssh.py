"""SSH workers: start workers on other machines over SSH (rush's remote daemons).

For each worker the launcher runs ONE ``ssh [options] -- host 'sh -c ...'``
whose remote shell creates the run directory, optionally writes the
credentials file from ssh's stdin, starts ``python -m rushhpc worker ...``
detached (``setsid nohup``, stdin from /dev/null, stdout and stderr in
``<remote_run_dir>/workers/<wid>.out|.err``), prints the worker's pid and
returns at once. The worker outlives the ssh connection and the manager.

There is no scheduler to ask: the heartbeat decides. ``stop_workers(type="kill")``
pushes the worker's kill list, on which its heartbeat process blocks, and the
heartbeat SIGKILLs the worker; a worker whose heartbeat expires is declared
lost by `detect_lost_workers`. As a second stage, `SshLauncher.kill` asks each
host (one ssh per host) to wait up to ``kill_wait`` seconds for the workers to
vanish and SIGKILLs the process group of any that is still alive, after
checking that the pid still runs that worker (its command line names the
worker id), so a reused pid is never hit.

Secrets: the Redis URL and the signing key are never in an argv, on either
machine. The worker reads them from 0600 files (``--credentials``,
``--signing-key``): the manager's own files when ``remote_run_dir`` is the
manager's run directory (a shared file system, the default), otherwise copies
that the launcher sends through ssh's stdin (two lines, written under
``umask 077``).

Example:
    >>> rush_plan(worker_type="ssh", config="redis://:secret@head-node:6379", launcher_options={
    ...     "hosts": ["node1", "me@node2", "node3:2222"], "workers_per_host": 4,
    ...     "python": "/opt/venv/bin/python", "ssh_options": ["-i", "~/.ssh/id_ed25519"]})
    >>> rush = rsh("sweep-1")
    >>> rush.start_workers(queue_loop, n_workers=12, fun=objective)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any, Sequence

from rushhpc import defaults
from rushhpc.errors import RushConfigError, RushWorkerError
from rushhpc.launchers.base import LaunchContext, Launcher, LaunchRecord, shell_join

log = logging.getLogger("rushhpc.launchers")

# Launcher options this launcher reads; poll_interval and max_poll_interval belong to the manager.
OPTION_KEYS = (
    "hosts", "workers_per_host", "python", "ssh_options", "remote_run_dir", "setup", "ssh",
    "connect_timeout", "launch_timeout", "parallel", "kill_wait", "ssh_kill", "poll_interval",
    "max_poll_interval",
)
PID_MARK = "rushhpc-pid="
KILLED_MARK = "rushhpc-killed="


@dataclasses.dataclass(frozen=True)
class SshHost:
    """One entry of ``hosts``: ``host``, ``user@host``, ``host:port`` or ``user@[v6addr]:port``."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def args(self) -> list[str]:
        # ssh keeps the first value it sees for an option: the host's own port wins over ssh_options
        return ["-p", str(self.port)] if self.port else []


def parse_host(spec: Any) -> SshHost:
    """Parse a ``hosts`` entry; anything ssh could take for an option or a second word is refused.

    Example:
        >>> parse_host("me@node2:2222")
        SshHost(spec='me@node2:2222', host='node2', user='me', port=2222)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RushConfigError(f"ssh host {spec!r}: give a non-empty string like 'node1', 'me@node1' or 'node1:2222'")
    s = spec.strip()
    if s.startswith("-") or any(c.isspace() or ord(c) < 32 for c in s):
        raise RushConfigError(f"ssh host {spec!r}: must not start with '-' or contain spaces or control characters")
    user, _, rest = s.rpartition("@")
    port_text = None
    if rest.startswith("["):  # [v6addr] or [v6addr]:port
        end = rest.find("]")
        if end < 0 or (rest[end + 1:] and not rest[end + 1:].startswith(":")):
            raise RushConfigError(f"ssh host {spec!r}: write an IPv6 address with a port as [addr]:port")
        host, port_text = rest[1:end], rest[end + 2:] or None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host = rest  # a name, an IPv4 address, or a bare IPv6 address (no port)
    if not host or (user == "" and "@" in s):
        raise RushConfigError(f"ssh host {spec!r}: empty host or user name")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RushConfigError(f"ssh host {spec!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshHost(spec=s, host=host, user=user or None, port=port)


def assign_hosts(hosts: Sequence[SshHost], n: int, workers_per_host: int | None) -> list[SshHost]:
    """The host of each of ``n`` workers: round-robin over ``hosts``, or, with
    ``workers_per_host``, filling each host in turn with up to that many.

    Example:
        >>> [h.spec for h in assign_hosts([parse_host("a"), parse_host("b")], 3, None)]
        ['a', 'b', 'a']
    """
    if workers_per_host is None:
        return [hosts[i % len(hosts)] for i in range(n)]
    if isinstance(workers_per_host, bool) or not isinstance(workers_per_host, int) or workers_per_host < 1:
        raise RushConfigError(f"workers_per_host must be a positive integer, got {workers_per_host!r}")
    capacity = workers_per_host * len(hosts)
    if n > capacity:
        raise RushConfigError(
            f"{n} workers do not fit on {len(hosts)} host(s) x workers_per_host={workers_per_host} "
            f"(= {capacity}): start fewer workers, add hosts, or raise workers_per_host"
        )
    return [hosts[i // workers_per_host] for i in range(n)]


def remote_path(path: str) -> str:
    """Quote a remote path for sh; a leading ``~/`` becomes ``"$HOME"/`` (expanded remotely)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


@dataclasses.dataclass
class _Settings:
    hosts: list[SshHost]
    workers_per_host: int | None
    python: list[str]
    ssh: str
    ssh_options: list[str]
    remote_run_dir: str
    copy_credentials: bool
    setup: list[str]
    launch_timeout: float
    parallel: int
    kill_wait: float
    ssh_kill: bool


class SshLauncher(Launcher):
    """Start workers on remote hosts with one ``ssh`` each; kill through the heartbeat.

    Options (``launcher_options``): ``hosts`` (required), ``workers_per_host``,
    ``python`` (default ``python3``), ``ssh_options``, ``remote_run_dir``,
    ``setup`` (shell lines run before the worker), ``ssh`` (the client, default
    ``ssh``), ``connect_timeout`` (10 s), ``launch_timeout`` (60 s per ssh),
    ``parallel`` (ssh connections at once per host, 4), ``kill_wait`` (3 s),
    ``ssh_kill`` (True). See docs/launchers/ssh.md.
    """

    name = "ssh"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        if self.options.get("hosts") is not None:
            self._settings(None)  # refuse a bad configuration at once (hosts may also come per start)
        self._by_worker: dict[str, tuple[SshHost, _Settings]] = {}

    # ------------------------------------------------------------ options
    def _settings(self, overrides: dict[str, Any] | None) -> _Settings:
        opts = dict(self.options)
        opts.update(overrides or {})
        unknown = sorted(set(opts) - set(OPTION_KEYS))
        if unknown:
            raise RushConfigError(f"unknown ssh launcher option(s) {unknown}; known: {list(OPTION_KEYS)}")
        hosts = opts.get("hosts")
        if isinstance(hosts, str):
            hosts = [hosts]
        if not hosts:
            raise RushConfigError(
                'worker_type "ssh" needs hosts: rush_plan(worker_type="ssh", '
                'launcher_options={"hosts": ["node1", "me@node2:2222"]})'
            )
        parsed = [parse_host(h) for h in hosts]
        python = opts.get("python") or "python3"
        python = [python] if isinstance(python, str) else [str(p) for p in python]
        ssh_options = opts.get("ssh_options") or []
        ssh_options = shlex.split(ssh_options) if isinstance(ssh_options, str) else [str(o) for o in ssh_options]
        setup = opts.get("setup") or []
        setup = [setup] if isinstance(setup, str) else [str(line) for line in setup]
        local_dir = str(self.context.run_dir)
        rdir = opts.get("remote_run_dir")
        if rdir:
            rdir = str(PurePosixPath(str(rdir)) / self.context.network_id)
        else:
            rdir = local_dir
        connect_timeout = float(opts.get("connect_timeout") or defaults.SSH_CONNECT_TIMEOUT)
        ours = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}"]
        parallel = int(opts.get("parallel") or defaults.SSH_PARALLEL)
        return _Settings(
            hosts=parsed,
            workers_per_host=opts.get("workers_per_host"),
            python=python,
            ssh=str(opts.get("ssh") or "ssh"),
            # the first value ssh sees for an option wins: the user's options before our defaults
            ssh_options=ssh_options + ours,
            remote_run_dir=rdir,
            copy_credentials=rdir != local_dir,
            setup=setup,
            launch_timeout=float(opts.get("launch_timeout") or defaults.SSH_LAUNCH_TIMEOUT),
            parallel=max(1, parallel),
            kill_wait=float(opts["kill_wait"]) if opts.get("kill_wait") is not None else defaults.SSH_KILL_WAIT,
            ssh_kill=opts.get("ssh_kill") is None or bool(opts["ssh_kill"]),
        )

    def ssh_argv(self, host: SshHost, settings: _Settings, script: str) -> list[str]:
        """``ssh [port] [options] -- destination 'sh -c SCRIPT'`` (the remote command is one word)."""
        return [settings.ssh, *host.args(), *settings.ssh_options, "--", host.destination, "sh -c " + shlex.quote(script)]

    def launch_script(self, settings: _Settings, argv: Sequence[str], worker_id: str, credentials: str | None,
                      signing_key: str | None = None) -> str:
        """The remote shell script that starts one worker detached and prints its pid.

        With ``credentials`` (a remote path), the file is written from stdin, 0600,
        through a temporary name and ``mv`` (a worker that reads it meanwhile never sees
        a half-written file). With ``signing_key`` too, stdin holds two lines: the
        credentials, then the signing key.
        """
        rdir = settings.remote_run_dir
        wdir = rdir.rstrip("/") + "/workers"
        lines = ["set -e", "umask 077", f"mkdir -p {remote_path(wdir)}"]
        if credentials and signing_key:
            tmp_c = remote_path(credentials + ".tmp.") + "$$"
            tmp_k = remote_path(signing_key + ".tmp.") + "$$"
            lines += ["IFS= read -r C", "IFS= read -r K",
                      f"printf '%s' \"$C\" > {tmp_c}", f"mv -f {tmp_c} {remote_path(credentials)}",
                      f"printf '%s\\n' \"$K\" > {tmp_k}", f"mv -f {tmp_k} {remote_path(signing_key)}",
                      "C= K="]
        elif credentials:
            tmp = remote_path(credentials + ".tmp.") + "$$"
            lines += [f"cat > {tmp}", f"mv -f {tmp} {remote_path(credentials)}"]
        lines += settings.setup
        lines += [
            "S=",
            "if command -v setsid >/dev/null 2>&1; then S=setsid; fi",
            # no `&&` before `&`: only the worker goes to the background, so $! is its pid
            f"$S nohup {shell_join(argv)} </dev/null >{remote_path(f'{wdir}/{worker_id}.out')} "
            f"2>{remote_path(f'{wdir}/{worker_id}.err')} & echo {PID_MARK}$!",
        ]
        return "; ".join(lines)

    def _run(self, argv: list[str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
        self.calls += 1
        try:
            return subprocess.run(
                argv,
                input=stdin if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
            )
        except FileNotFoundError:
            raise RushConfigError(
                f"the ssh client {argv[0]!r} was not found: install OpenSSH's client or set launcher_options ssh=PATH"
            ) from None

    # ------------------------------------------------------------ launch
    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        s = self._settings(options.get("launcher_options"))
        placement = assign_hosts(s.hosts, len(worker_ids), s.workers_per_host)
        local_creds = self.context.credentials_file()
        local_key = self.context.signing_key_file()
        if s.copy_credentials:
            remote_creds = s.remote_run_dir.rstrip("/") + "/credentials.json"
            remote_key = s.remote_run_dir.rstrip("/") + "/signing.key"
            payload = (local_creds.read_bytes().strip() + b"\n" + local_key.read_bytes().strip() + b"\n")
        else:
            remote_creds, remote_key, payload = str(local_creds), str(local_key), None
        by_host: dict[SshHost, list[str]] = {}
        for wid, host in zip(worker_ids, placement):
            by_host.setdefault(host, []).append(wid)

        def one(host: SshHost, wid: str) -> LaunchRecord | str:
            argv = self.spec(start_id, wid, options, credentials=remote_creds,
                             signing_key=remote_key).argv(python=s.python[0])
            argv = [*s.python, *argv[1:]]
            script = self.launch_script(s, argv, wid, remote_creds if s.copy_credentials else None,
                                        remote_key if s.copy_credentials else None)
            cmd = self.ssh_argv(host, s, script)
            try:
                out = self._run(cmd, payload if s.copy_credentials else None, s.launch_timeout)
            except subprocess.TimeoutExpired:
                return f"ssh did not return within {s.launch_timeout:g} s"
            stdout = out.stdout.decode(errors="replace")
            stderr = out.stderr.decode(errors="replace").strip()
            m = re.search(re.escape(PID_MARK) + r"(\d+)", stdout)
            if out.returncode != 0 or m is None:
                what = "ssh failed" if out.returncode == 255 else f"the remote shell failed (exit {out.returncode})"
                return f"{what}: {stderr or stdout.strip() or '(no output)'}"
            self._by_worker[wid] = (host, s)
            return LaunchRecord(
                worker_id=wid, launcher=self.name, job_id=None, start_id=start_id,
                extra={"host": host.spec, "pid": int(m.group(1)), "run_dir": s.remote_run_dir},
            )

        started: list[LaunchRecord] = []
        # host by host, so an unreachable host stops the launch before the next one is tried
        for host, wids in by_host.items():
            with ThreadPoolExecutor(max_workers=min(s.parallel, len(wids))) as pool:
                results = list(pool.map(one, [host] * len(wids), wids))
            errors = [r for r in results if isinstance(r, str)]
            started += [r for r in results if isinstance(r, LaunchRecord)]
            if errors:
                if started:
                    # the manager learns of the workers that did start, so stop_workers reaches them
                    for r in started:
                        r.extra["options"] = options  # as Rush._start records them
                    self.context.store_records(started)
                note = (
                    f" {len(started)} worker(s) started before this failure keep running: "
                    f"{', '.join(r.worker_id for r in started)} (stop them with rush.stop_workers(worker_ids=...))."
                    if started else ""
                )
                check = shlex.join([s.ssh, *host.args(), host.destination, "true"])
                raise RushWorkerError(
                    f"cannot start {len(errors)} of {len(wids)} worker(s) on ssh host {host.spec!r}: {errors[0]}."
                    f"{note} Check that `{check}` (with your ssh_options) works without a password prompt "
                    "(key authentication) and that the host is reachable."
                )
        return started

    # ------------------------------------------------------------ kill
    def kill_script(self, targets: Sequence[tuple[int, str]], wait: float) -> str:
        """Remote script: for each (pid, worker id), wait up to ``wait`` s for the process to
        end; if it is still alive and still that worker, SIGKILL its process group."""
        rounds = max(1, math.ceil(wait / 0.1))
        fn = (
            # gone, or a zombie nobody reaped yet: nothing to do
            'k() { i=0; while st=$(ps -o stat= -p "$1" 2>/dev/null); do case "$st" in *Z*) return 0;; esac; '
            f'if [ "$i" -ge {rounds} ]; then '
            'case "$(ps -ww -o args= -p "$1" 2>/dev/null)" in *"--worker-id $2 "*|*"--worker-id $2") '
            'kill -s KILL -- "-$1" 2>/dev/null || kill -s KILL "$1" 2>/dev/null; '
            f'echo "{KILLED_MARK}$2";; esac; return 0; fi; '
            "sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done; }"
        )
        calls = " ".join(f"k {int(pid)} {shlex.quote(wid)} &" for pid, wid in targets)
        return f"{fn}; {calls} wait"

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        """Second stage of a kill (the manager already pushed the kill lists the heartbeats
        block on): per host, one ssh waits up to ``kill_wait`` s for each worker's process
        to end and SIGKILLs the process group of any still running that worker. Best effort:
        an unreachable host is logged, not raised (its workers' heartbeats expire)."""
        if not records:
            return
        try:
            default: _Settings | None = self._settings(None)
        except RushConfigError:
            default = None  # no hosts in the plan (given per start): use each launch's settings
        pids = self.context.worker_field([r.worker_id for r in records], "pid")
        groups: dict[tuple, tuple[_Settings, list[tuple[int, str]]]] = {}
        for r, pid in zip(records, pids):
            host, s = self._by_worker.get(r.worker_id, (None, default))
            if s is None or not s.ssh_kill:
                continue
            if host is None:
                spec = (r.extra or {}).get("host")
                if not spec:
                    continue
                host = parse_host(spec)
            pid = pid or (r.extra or {}).get("pid")
            if not pid or not str(pid).isdigit():
                continue
            key = (host, s.ssh, tuple(s.ssh_options))  # one ssh per host and way of reaching it
            groups.setdefault(key, (s, []))[1].append((int(pid), r.worker_id))

        def one(item: tuple[tuple, tuple[_Settings, list[tuple[int, str]]]]) -> None:
            (host, *_), (s, targets) = item
            cmd = self.ssh_argv(host, s, self.kill_script(targets, s.kill_wait))
            try:
                out = self._run(cmd, None, s.kill_wait + defaults.SSH_COMMAND_TIMEOUT)
            except (subprocess.TimeoutExpired, RushConfigError) as e:
                log.warning("ssh kill on %s: %s", host.spec, e)
                return
            text = out.stdout.decode(errors="replace")
            killed = re.findall(re.escape(KILLED_MARK) + r"(\S+)", text)
            if out.returncode != 0:
                log.warning("ssh kill on %s failed (exit %s): %s", host.spec, out.returncode,
                            out.stderr.decode(errors="replace").strip())
            elif killed:
                log.warning("ssh host %s: worker(s) %s did not stop through their heartbeat within %g s; "
                            "SIGKILLed over ssh", host.spec, ", ".join(killed), s.kill_wait)

        if groups:
            with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
                list(pool.map(one, groups.items()))

    # ------------------------------------------------------------ logs
    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        """Last lines of a worker's stderr: read locally when the run directory is shared,
        else over ssh (``tail``)."""
        host, s = self._by_worker.get(worker_id, (None, None))
        if host is None or s is None or not s.copy_credentials:
            return super().stderr_tail(worker_id, n)
        path = s.remote_run_dir.rstrip("/") + f"/workers/{worker_id}.err"
        try:
            argv = self.ssh_argv(host, s, f"tail -n {int(n)} {remote_path(path)}")
            out = self._run(argv, None, defaults.SSH_COMMAND_TIMEOUT)
        except (subprocess.TimeoutExpired, RushConfigError):
            return ""
        return out.stdout.decode(errors="replace").rstrip("\n") if out.returncode == 0 else ""
