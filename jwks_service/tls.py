"""HTTPS for `serve`: the PEM files of `[http] tls_cert` and `tls_key`, checked, and loaded into one
`ssl.SSLContext`; a reload (SIGHUP) loads the files again into that same context.

The files are read and checked with `cryptography` before OpenSSL sees them, so that a refusal names
the file and what is wrong with it: OpenSSL's own errors ("[SSL] PEM lib") name neither. A context
takes a new certificate for the handshakes that follow; connections already made keep theirs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from . import files
from .clock import rfc3339
from .config import Settings
from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate file and its key file that were checked to be readable PEM and to match."""

    cert_file: str
    key_file: str
    subject: str  # of the first (the server's) certificate, RFC 4514
    not_after: float  # when it expires, Unix time
    chain: int  # certificates in the file, the server's own included

    @property
    def summary(self) -> str:
        chain = f" (+{self.chain - 1} in its chain)" if self.chain > 1 else ""
        return f"{self.subject or '(empty subject)'}{chain}, expires {rfc3339(self.not_after)}, from {self.cert_file}"


def _read(path: str, setting: str) -> bytes:
    return files.read(path, setting, ConfigError)


def _spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    der: bytes = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def check(cert_file: str, key_file: str) -> Certificate:
    """Read both files: a PEM certificate (its chain may follow it) and the PEM private key, without a
    password, that belongs to it. Raises ConfigError naming the setting and the file."""
    cert_pem = _read(cert_file, "http.tls_cert")
    key_pem = _read(key_file, "http.tls_key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(
            f"http.tls_cert: {cert_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"http.tls_key: {key_file} is encrypted; give the key without a password") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"http.tls_key: {key_file} holds no PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if _spki(key) != _spki(chain[0]):
        raise ConfigError(f"http.tls_key: {key_file} is not the key of the certificate in {cert_file}")
    return Certificate(
        cert_file=cert_file,
        key_file=key_file,
        subject=chain[0].subject.rfc4514_string(),
        not_after=chain[0].not_valid_after_utc.timestamp(),
        chain=len(chain),
    )


def load(context: ssl.SSLContext, cert: Certificate) -> None:
    """Load the checked files into `context`; handshakes from now on present them."""
    try:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    except (OSError, ssl.SSLError) as exc:  # changed since the check, or a key type OpenSSL refuses
        raise ConfigError(
            f"http.tls_cert: {cert.cert_file} with {cert.key_file}: OpenSSL refused them: {exc}"
        ) from None


def server_context(settings: Settings) -> tuple[ssl.SSLContext, Certificate]:
    """A server context with Python's defaults (TLS 1.2 or later, no client certificates) holding the
    configured certificate; the settings must have TLS on."""
    cert = check(settings.tls_cert, settings.tls_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load(context, cert)
    return context, cert
