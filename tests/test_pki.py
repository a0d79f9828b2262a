"""The run-private PKI: real TLS handshakes succeed with our CA and fail with another."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from pets_lite import net, pki


def handshake(crt, key, ca_file, server_name: str) -> str:
    """One TLS handshake on loopback: the server presents (crt, key), the client trusts
    ``ca_file`` and checks ``server_name``. Returns "ok" or the client's error."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    listener = socket.create_server((net.LOOPBACK, 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((net.LOOPBACK, port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name):
                return "ok"
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    finally:
        listener.close()
        thread.join(5)


def test_a_server_certificate_from_our_ca_verifies_for_its_addresses_only(tmp_path):
    ca = pki.make_ca(tmp_path / "ca")
    crt, key = pki.issue_server_certificate(ca, tmp_path / "link", ["127.0.0.1", "superlink"])
    assert pki.subject_addresses(crt) == ["127.0.0.1", "superlink"]
    assert handshake(crt, key, ca.certificate, "127.0.0.1") == "ok"
    assert "CERTIFICATE_VERIFY_FAILED" in handshake(crt, key, ca.certificate, "10.9.9.9")


def test_a_client_that_trusts_another_ca_refuses_the_server(tmp_path):
    ours, theirs = pki.make_ca(tmp_path / "ours"), pki.make_ca(tmp_path / "theirs")
    crt, key = pki.issue_server_certificate(ours, tmp_path / "link", ["127.0.0.1"])
    assert "CERTIFICATE_VERIFY_FAILED" in handshake(crt, key, theirs.certificate, "127.0.0.1")


def test_everything_is_private_and_never_overwritten(tmp_path):
    ca = pki.make_ca(tmp_path / "run")
    files = [ca.certificate, ca.key_file,
             *pki.issue_server_certificate(ca, tmp_path / "run", ["127.0.0.1"]),
             *pki.node_key_pair(tmp_path / "run", "hospital-1")]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    with pytest.raises(pki.PKIError, match="never overwritten"):
        pki.make_ca(tmp_path / "run")
    with pytest.raises(pki.PKIError, match="at least one address"):
        pki.issue_server_certificate(ca, tmp_path / "other", [])


def test_node_keys_are_the_p384_openssh_pair_flower_reads(tmp_path):
    private, public = pki.node_key_pair(tmp_path, "h1")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert key.curve.name == "secp384r1"
    assert load_ssh_public_key(public.read_bytes()).public_numbers() == \
        key.public_key().public_numbers()
    other_private, _ = pki.node_key_pair(tmp_path, "h2")
    assert other_private.read_bytes() != private.read_bytes(), "each hospital its own key"
