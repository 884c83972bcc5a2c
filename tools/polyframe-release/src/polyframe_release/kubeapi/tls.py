"""TLS for the API (a CA of its own and a server certificate) and kubeconfigs that name it:
kubectl sends no bearer token over plain HTTP.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBECONFIG_CLUSTER = "polyframe-release"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA clients trust, and the server's certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (0600), also over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate valid from five minutes ago for a year, with its key identifiers (which
    strict X.509 verification, Python 3.13's default, requires)."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*granted: str) -> x509.KeyUsage:
    names = (
        *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
        *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
    )
    return x509.KeyUsage(**{name: name in granted for name in names})


def make_tls(folder: Path, hosts: list[str]) -> TLSFiles:
    """A CA of its own and a server certificate it signed, valid for every host name and IP in
    ``hosts`` (SANs), into ``folder`` (``ca.crt``, ``tls.crt``, ``tls.key``; 0600).

    The CA's key is never written: nothing else can be signed with it, so trusting ``ca.crt``
    trusts this one server only.
    """
    if not hosts:
        raise ValueError("make_tls needs at least one host name or IP address")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = "polyframe-release-ca"
    ca = _certificate(
        ca_name,
        ca_key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage("key_cert_sign", "crl_sign"), True),
        ],
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = _certificate(
        hosts[0],
        key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage("digital_signature"), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(sans), False),
        ],
    )
    files = TLSFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")
    _write_private(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    _write_private(files.key, key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
    return files


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    namespace: str,
    users: Mapping[str, str],
    current: str,
    ca_file: Path | None = None,
) -> None:
    """A kubeconfig (0600) for ``server``: one cluster, and for each user (name -> bearer
    token) a context of the same name in ``namespace``; ``current`` is the current context."""
    if current not in users:
        raise ValueError(f"current context {current!r} is none of the users {sorted(users)}")
    cluster = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    contexts = [
        {
            "name": user,
            "context": {"cluster": KUBECONFIG_CLUSTER, "user": user, "namespace": namespace},
        }
        for user in users
    ]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBECONFIG_CLUSTER, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}} for user, token in users.items()],
        "contexts": contexts,
        "current-context": current,
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
