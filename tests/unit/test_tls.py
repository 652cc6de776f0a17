"""jwks_service/tls.py: the certificate and key files checked before OpenSSL sees them, each refusal
naming the file; a context reloaded in place presents the new certificate to new handshakes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.certs import issue, make_ca
from jwks_service import tls
from jwks_service.config import build_settings
from jwks_service.errors import ConfigError


def _handshake_peer(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """The certificate the server presents, over memory BIOs (no socket)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_checked_certificate_is_served_and_reloaded_into_the_same_context(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    first = issue(ca, tmp_path)
    settings = build_settings({"http": {"tls_cert": str(first.cert_file), "tls_key": str(first.key_file)}})
    context, cert = tls.server_context(settings)
    assert cert.subject == "CN=jwks-service" and cert.chain == 1
    assert "CN=jwks-service, expires " in cert.summary
    client = ssl.create_default_context(cafile=str(ca.file))
    assert _handshake_peer(context, client) == first.der
    second = issue(ca, tmp_path, common_name="renewed")
    tls.load(context, tls.check(str(second.cert_file), str(second.key_file)))
    assert _handshake_peer(context, client) == second.der


def test_a_chain_after_the_certificate_is_counted(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = issue(ca, tmp_path)
    cert.cert_file.write_bytes(cert.cert_file.read_bytes() + ca.file.read_bytes())
    checked = tls.check(str(cert.cert_file), str(cert.key_file))
    assert checked.chain == 2 and "(+1 in its chain)" in checked.summary


def test_files_are_refused_naming_the_file_and_the_reason(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = issue(ca, tmp_path)
    crt, key = str(cert.cert_file), str(cert.key_file)
    cases = {
        (str(tmp_path / "nope.crt"), key): f"http.tls_cert: file {tmp_path / 'nope.crt'} does not exist",
        (crt, str(tmp_path)): f"http.tls_key: cannot read {tmp_path}: Is a directory",
        (key, key): f"http.tls_cert: {key} holds no PEM certificate",
        (crt, crt): f"http.tls_key: {crt} holds no PEM private key",
        (str(ca.file), key): f"http.tls_key: {key} is not the key of the certificate in {ca.file}",
    }
    for (cert_file, key_file), message in cases.items():
        with pytest.raises(ConfigError) as info:
            tls.check(cert_file, key_file)
        assert info.value.description.startswith(message), info.value.description
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=f"http.tls_key: {encrypted} is encrypted; give the key without a password"):
        tls.check(crt, str(encrypted))
