"""A run-private public-key infrastructure: a CA, a server certificate, node key pairs.

For a deployment on hosts of its own (:mod:`pets_lite.netns`, or real machines): :func:`make_ca`
creates a private certificate authority, :func:`issue_server_certificate` a TLS certificate for a
server (every address it is reached at as a subject alternative name), :func:`node_key_pair` an
elliptic-curve key pair in OpenSSH format for a client that must authenticate (Flower's SuperNode
authentication takes a NIST-curve key in that format). Every file is written with mode 0600
inside a folder of mode 0700, and never overwritten.

What this does not give you: revocation, key rotation, or protection of the CA key beyond file
permissions. A consortium would keep the CA key offline (or in an HSM) and issue certificates
from there; here the CA lives as long as one run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Validity of what a run issues: long enough for a run, short enough to be useless later.
VALIDITY = dt.timedelta(days=2)


class PKIError(RuntimeError):
    """A certificate or key could not be made or written (the message names the file)."""


def private_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder only its owner can enter (mode 0700), created if needed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a new file of mode 0600; an existing file is an error, never replaced."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PKIError(f"{path} exists: keys and certificates are never overwritten") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pets_lite consortium (test)")])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its files and, while the run lasts, its key in memory."""

    certificate: Path
    key_file: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(folder: str | os.PathLike, name: str = "pets_lite test CA") -> Authority:
    """A new self-signed CA (EC P-256) in ``folder``: ``ca.crt`` and ``ca.key``, both 0600."""
    folder = private_folder(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    crt = write_private(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    key_file = write_private(folder / "ca.key", _pem_key(key))
    return Authority(crt, key_file, key, cert)


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def issue_server_certificate(ca: Authority, folder: str | os.PathLike, addresses: list[str],
                             name: str = "server") -> tuple[Path, Path]:
    """A TLS server certificate signed by ``ca`` whose subject alternative names are
    ``addresses`` (IP addresses or host names: every one a client will dial). Returns the paths
    ``(<name>.crt, <name>.key)``, both 0600."""
    if not addresses:
        raise PKIError("a server certificate needs at least one address to be reached at")
    folder = private_folder(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(a) for a in addresses]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    crt = write_private(folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    key_file = write_private(folder / f"{name}.key", _pem_key(key))
    return crt, key_file


def node_key_pair(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format for one node: ``(<name>, <name>.pub)``, both 0600.

    The private key never leaves ``folder``; the public key is what a server registers."""
    folder = private_folder(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return (write_private(folder / name, private),
            write_private(folder / f"{name}.pub", public + b"\n"))


def subject_addresses(certificate: str | os.PathLike) -> list[str]:
    """The subject alternative names of a certificate file, as strings."""
    cert = x509.load_pem_x509_certificate(Path(certificate).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + \
        san.get_values_for_type(x509.DNSName)
