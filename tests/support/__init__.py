"""What tests share: polling with a deadline, free ports, process checks, TLS material, paths.

Tests import these (``from support import wait_until``); fixtures live in tests/conftest.py, and the
service helpers in this package's modules (slurm_cluster, redis_cluster, batch_backends, ssh, ...).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
TESTS = REPO / "tests"
GOLDEN = TESTS / "golden"
EXAMPLES = REPO / "examples"
PBS_EMULATOR = TESTS / "pbs_emulator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def tls_redis_binary() -> str:
    """A redis-server built with TLS; skip without one (fail when RUSHHPC_REQUIRE_TLS=1)."""
    from rushhpc.errors import RushConfigError
    from rushhpc.server.binary import find_redis_server

    try:
        return find_redis_server(tls=True)
    except RushConfigError as e:
        if os.environ.get("RUSHHPC_REQUIRE_TLS") == "1":
            pytest.fail(f"a TLS-capable redis-server is required (RUSHHPC_REQUIRE_TLS=1): {e}")
        pytest.skip(f"no TLS-capable redis-server: {e}")


def process_gone(pid: int) -> bool:
    """True once ``pid`` has ended (a zombie nobody reaps has ended too)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"openssl {' '.join(args)}: {out.stderr}"


def make_test_ca(folder: Path, name: str = "ca") -> dict[str, Path]:
    """A self-signed CA and a server (localhost, 127.0.0.1) and client certificate it signs,
    made with the openssl CLI (not with the code under test). Keys are 0600."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=rushhpc test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    out = {"ca": folder / f"{name}.crt", "ca_key": folder / f"{name}.key"}
    for leaf, cn, ext in (
        ("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "rushhpc-test-client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}-{leaf}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + ext + "\n")
        openssl("req", *ec, "-keyout", f"{name}-{leaf}.key", "-out", f"{name}-{leaf}.csr", "-subj", f"/CN={cn}",
                cwd=folder)
        openssl("x509", "-req", "-in", f"{name}-{leaf}.csr", "-CA", f"{name}.crt", "-CAkey", f"{name}.key",
                "-CAcreateserial", "-out", f"{name}-{leaf}.crt", "-days", "2", "-extfile", f"{name}-{leaf}.ext",
                cwd=folder)
        out[leaf] = folder / f"{name}-{leaf}.crt"
        out[f"{leaf}_key"] = folder / f"{name}-{leaf}.key"
    for k, p in out.items():
        p.chmod(0o600 if k.endswith("key") else 0o644)
    return out
