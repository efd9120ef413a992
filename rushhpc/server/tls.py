"""TLS material of a ``rushhpc redis`` server: a CA, the server certificate it signs, a client certificate.

Generated with the ``cryptography`` package (the ``tls`` extra), imported only here and only when
certificates are made or read: a CA (EC P-256, `defaults.REDIS_TLS_CA_DAYS`) and a server certificate
it signs (`defaults.REDIS_TLS_CERT_DAYS`) naming this host's names and addresses. Clients verify the
server against ``tls/ca.crt``. A generated set is kept across restarts while it names every address
and is valid for `defaults.REDIS_TLS_RENEW_DAYS` more (`server_tls`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path
from typing import Any, Sequence

from rushhpc import defaults
from rushhpc.errors import RushConfigError
from rushhpc.server.folder import mkdir_private, write_private
from rushhpc.server.ports import WILDCARDS
from rushhpc.store.secrets import check_private_file


def san_names(bind: Sequence[str], host: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the server certificate names: this host's, loopback's, the bind
    addresses (every interface's for a wildcard) and ``host``.

    Example:
        >>> san_names(["0.0.0.0"], "login1.cluster")
        (['localhost', 'login1', 'login1.cluster'], ['10.0.0.5', '127.0.0.1', '::1'])
    """
    dns = {"localhost", socket.gethostname(), socket.getfqdn()}
    ips = {"127.0.0.1", "::1"}
    for b in [*bind, host]:
        b = b.lstrip("-")
        if b in WILDCARDS:
            import psutil  # here: only a wildcard bind needs the interfaces

            for addrs in psutil.net_if_addrs().values():
                for a in addrs:
                    if a.family in (socket.AF_INET, socket.AF_INET6):
                        ips.add(a.address.split("%")[0])
            continue
        try:
            ipaddress.ip_address(b)
            ips.add(b)
        except ValueError:
            dns.add(b)
    return sorted(d for d in dns if d), sorted(ips)


def _crypto() -> Any:
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        raise RushConfigError(
            "generating TLS certificates needs the 'cryptography' package: pip install 'rushhpc[tls]', or pass "
            "your own --tls-cert, --tls-key and --tls-ca"
        ) from None
    import cryptography

    return cryptography


def generate_tls(folder: Path, dns: Sequence[str], ips: Sequence[str], client: bool = False,
                 days: int = defaults.REDIS_TLS_CERT_DAYS) -> dict[str, str]:
    """A CA (kept when one is there) and a server certificate it signs for these names,
    plus a client certificate with ``client``. Keys are 0600. Returns the paths.

    Example:
        >>> generate_tls(Path("tls"), ["login1"], ["10.0.0.5"])["cert"]
        'tls/server.crt'
    """
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    mkdir_private(folder)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_crt, ca_key = folder / "ca.crt", folder / "ca.key"

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    cakey: Any  # an EC key; cryptography's loader is typed for every kind of key
    if ca_crt.exists() and ca_key.exists():
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        cakey = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    else:
        cakey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rushhpc Redis CA {socket.gethostname()}")])
        ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(cakey.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=defaults.REDIS_TLS_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(cakey.public_key()), critical=False)
            .sign(cakey, hashes.SHA256())
        )
        write_private(ca_key, pem_key(cakey))
        ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, usage: Any, sans: list[Any] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(cakey.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(cakey, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    sans: list[Any] = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    # the server certificate doubles as Redis's client certificate (replication, cluster bus)
    crt, key = leaf(dns[0] if dns else "redis", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans)
    write_private(folder / "server.key", key)
    (folder / "server.crt").write_bytes(crt)
    out = {"ca": str(ca_crt), "cert": str(folder / "server.crt"), "key": str(folder / "server.key")}
    if client:
        crt, key = leaf("rushhpc-client", [ExtendedKeyUsageOID.CLIENT_AUTH], None)
        write_private(folder / "client.key", key)
        (folder / "client.crt").write_bytes(crt)
        out.update(client_cert=str(folder / "client.crt"), client_key=str(folder / "client.key"))
    return out


def cert_covers(path: Path, dns: Sequence[str], ips: Sequence[str],
                min_days: int = defaults.REDIS_TLS_RENEW_DAYS) -> bool:
    """True when a generated certificate names all of these and is valid for ``min_days`` more.

    Example:
        >>> cert_covers(Path("tls/server.crt"), ["login1"], ["10.0.0.5"])
        True
    """
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 - any unreadable certificate is regenerated
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    expires = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") else cert.not_valid_after
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.timezone.utc)
    fresh = expires - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=min_days)
    return fresh and set(dns) <= have_dns and {str(ipaddress.ip_address(i)) for i in ips} <= have_ip


def cert_expiry(path: str | Path) -> str | None:
    """When a certificate expires (ISO date), if ``cryptography`` can read it.

    Example:
        >>> cert_expiry("tls/server.crt")
        '2027-03-01'
    """
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except Exception:  # noqa: BLE001
        return None
    expires = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") else cert.not_valid_after
    return str(expires.date().isoformat())


def server_tls(folder: Path, bind: Sequence[str], host: str, auth_clients: bool = False,
               given: tuple[str | None, str | None, str | None] = (None, None, None)) -> dict[str, str]:
    """The TLS files a server starts with: ``given`` (certificate, key, CA: ``--tls-cert``, ``--tls-key``,
    ``--tls-ca``) as absolute paths, else the set generated in ``folder``, kept when it still covers
    these addresses (and has a client certificate when ``auth_clients``), made again otherwise.

    Example:
        >>> server_tls(Path("tls"), ["0.0.0.0"], "login1.cluster")["ca"]
        'tls/ca.crt'
    """
    cert, key, ca = given
    if cert and key and ca:
        check_private_file(key, "TLS key file (--tls-key)")
        return {k: str(Path(v).expanduser().absolute()) for k, v in (("cert", cert), ("key", key), ("ca", ca))}
    dns, ips = san_names(bind, host)
    t = folder
    reuse = (t / "server.crt").exists() and (t / "server.key").exists() and (t / "ca.crt").exists() \
        and cert_covers(t / "server.crt", dns, ips) and (not auth_clients or (t / "client.crt").exists())
    if not reuse:
        return generate_tls(t, dns, ips, client=auth_clients)
    tls = {"ca": str(t / "ca.crt"), "cert": str(t / "server.crt"), "key": str(t / "server.key")}
    if (t / "client.crt").exists():
        tls.update(client_cert=str(t / "client.crt"), client_key=str(t / "client.key"))
    return tls
