"""TLS on both services: two real nodes that serve TLS connect to each other over it, a client
with the CA runs a job, and one without it gets one line saying what to do."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import ECHO_WASM, Ctl, start_node, wait_connected


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost: (ca, cert, key) PEMs."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("node"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (d / "ca.pem", d / "node.pem", d / "node.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_nodes_and_clients_talk_over_tls(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))
    pem = ca.read_bytes()
    a = start_node(tmp_path / "a", name="a", args=("--engines", "wasm", *tls), tls_ca=pem)
    b = None
    try:
        b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=tls, tls_ca=pem)
        wait_connected([a, b])  # the peer stream runs over TLS
        ctl = Ctl(a.address, tmp_path)
        res = ctl("--tls-ca", str(ca), "wasm", "run", str(ECHO_WASM), "over", "tls")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]
        logs = ctl("--tls-ca", str(ca), "logs", job_id)
        assert "over tls" in logs.stdout
        plain = ctl("list").one_line_error()
        assert "--tls-ca" in plain, plain
    finally:
        if b is not None:
            b.stop()
        a.stop()


def test_a_key_that_is_not_the_certificates_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    _, cert, _ = make_pki(tmp_path)
    (tmp_path / "other").mkdir()
    _, _, other_key = make_pki(tmp_path / "other")
    proc = subprocess.run(
        [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--tls-cert", str(cert), "--tls-key", str(other_key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not the key of" in lines[0], proc.stderr
