"""Certificates for the TLS tests: a private CA, server and client certificates signed by it, an
expired one, and a second CA nobody trusts. Written as PEM files in a directory."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """`ca` signs `server` (127.0.0.1, localhost), `client`, and `expired` / `expired_client` (out of date);
    `other_ca` signs `stranger` (a client cert no listener trusts) and `other_server`."""

    ca: Path
    ca_key: Path
    server: Pair
    client: Pair
    expired: Pair
    expired_client: Pair
    other_ca: Path
    stranger: Pair
    other_server: Pair


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(directory: Path, cn: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _DAY).not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{cn}.key")
    return path, cert, key


def issue(directory: Path, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          server: bool = True, days: float = 30, valid_from_days: float = -1) -> Pair:
    """A certificate signed by the CA: for 127.0.0.1 and localhost (`server`) or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + valid_from_days * _DAY).not_valid_after(now + days * _DAY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = _ca(directory, "vmhealth-test-ca")
    other_ca, other_cert, other_key = _ca(directory, "someone-elses-ca")
    return Pki(
        ca=ca,
        ca_key=directory / "vmhealth-test-ca.key",
        server=issue(directory, "server", ca_cert, ca_key),
        client=issue(directory, "client", ca_cert, ca_key, server=False),
        expired=issue(directory, "expired", ca_cert, ca_key, days=-1, valid_from_days=-10),
        expired_client=issue(directory, "expired-client", ca_cert, ca_key, server=False, days=-1, valid_from_days=-10),
        other_ca=other_ca,
        stranger=issue(directory, "stranger", other_cert, other_key, server=False),
        other_server=issue(directory, "other-server", other_cert, other_key),
    )


def reissue(pki: Pki, directory: Path, name: str) -> Pair:
    """A new server certificate (new key, new serial) from the PKI's CA, as a rotation brings."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return issue(directory, name, ca_cert, ca_key)
