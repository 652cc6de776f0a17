"""Signature primitives in the encodings JWS uses (RFC 7518 §3), over `cryptography`.

Builds fast closures once per key: the hot paths call ``sign(data)`` / ``verify(data, sig)``
with no per-call dispatch. Shared by the local backend, the server's verifier and the SDK,
so it depends on nothing but `cryptography`, `joserfc` and the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from .algorithms import ALGORITHMS, Algorithm

SignFn = Callable[[bytes], bytes]
VerifyFn = Callable[[bytes, bytes], bool]

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
_COORD_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyMismatchError(ValueError):
    """The key material does not fit the algorithm (wrong type, curve or size)."""


def check_key(alg: Algorithm, key: PrivateKey | PublicKey | bytes) -> None:
    """One algorithm per key (RFC 8725 §3.1): refuse a key of another type, curve or size."""
    fam = alg.family
    if fam == "HMAC":
        if not isinstance(key, bytes) or len(key) < max(32, alg.hash_bytes):
            raise KeyMismatchError(f"{alg.name} needs a secret of at least {max(32, alg.hash_bytes)} bytes")
    elif fam in ("RSA", "RSA-PSS"):
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise KeyMismatchError(f"{alg.name} needs an RSA key")
        if key.key_size < 2048:
            raise KeyMismatchError(f"{alg.name} needs an RSA key of at least 2048 bits")
    elif fam == "EC":
        if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            raise KeyMismatchError(f"{alg.name} needs an EC key")
        if not isinstance(key.curve, _CURVES[alg.curve]):
            raise KeyMismatchError(f"{alg.name} needs a {alg.curve} key")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise KeyMismatchError(f"{alg.name} needs an Ed25519 key")


def generate_private_key(alg: Algorithm, key_bits: int) -> PrivateKey | bytes:
    import secrets

    fam = alg.family
    if fam == "HMAC":
        return secrets.token_bytes(key_bits // 8)
    if fam in ("RSA", "RSA-PSS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    if fam == "EC":
        return ec.generate_private_key(_CURVES[alg.curve]())
    return ed25519.Ed25519PrivateKey.generate()


def make_signer(alg: Algorithm, key: PrivateKey | bytes) -> SignFn:
    check_key(alg, key)
    fam = alg.family
    if fam == "HMAC":
        assert isinstance(key, bytes)
        # Key the HMAC once and copy the keyed state per token: hmac.digest looks the hash up by
        # name and re-keys on every call, which costs more than the MAC itself on a short input.
        copy_keyed = crypto_hmac.HMAC(key, _HASHES[alg.hash_name]()).copy

        def sign_hmac(data: bytes) -> bytes:
            mac = copy_keyed()
            mac.update(data)
            return mac.finalize()

        return sign_hmac
    if fam == "EC":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        # Hashing with hashlib and signing the digest is the same ECDSA signature, and cheaper than
        # letting `cryptography` set up its own hash context for every token.
        digest = getattr(hashlib, alg.hash_name)
        ecdsa = ec.ECDSA(Prehashed(_HASHES[alg.hash_name]()))
        size = _COORD_BYTES[alg.curve]
        zero = b"\0"
        ec_sign = key.sign

        def sign_ec(data: bytes) -> bytes:
            # JWS wants r || s, each left-padded to the coordinate size (RFC 7518 §3.4), not DER.
            # OpenSSL's DER is SEQUENCE { INTEGER r, INTEGER s }: 30 len [81 len for P-521] 02 rlen r 02 slen s,
            # each INTEGER minimal, with one 00 byte in front when its top bit is set. Reading the two
            # byte strings straight out of it is three times cheaper than decode_dss_signature + to_bytes.
            der = ec_sign(digest(data).digest(), ecdsa)
            at = 3 if der[1] > 127 else 2  # at: the tag of r
            end = at + 2 + der[at + 1]  # end: the tag of s
            return der[at + 2 : end][-size:].rjust(size, zero) + der[end + 2 :][-size:].rjust(size, zero)

        return sign_ec
    if fam == "RSA":
        assert isinstance(key, rsa.RSAPrivateKey)
        pkcs1, h = padding.PKCS1v15(), _HASHES[alg.hash_name]()
        rsa_sign = key.sign
        return lambda data: rsa_sign(data, pkcs1, h)
    if fam == "RSA-PSS":
        assert isinstance(key, rsa.RSAPrivateKey)
        h = _HASHES[alg.hash_name]()
        # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output.
        pss = padding.PSS(mgf=padding.MGF1(_HASHES[alg.hash_name]()), salt_length=alg.hash_bytes)
        rsa_sign = key.sign
        return lambda data: rsa_sign(data, pss, h)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign


def make_verifier(alg: Algorithm, key: PublicKey | bytes) -> VerifyFn:
    check_key(alg, key)
    fam = alg.family
    if fam == "HMAC":
        assert isinstance(key, bytes)
        digest, name, compare = hmac.digest, alg.hash_name, hmac.compare_digest

        def verify_hmac(data: bytes, sig: bytes) -> bool:
            return compare(digest(key, data, name), sig)

        return verify_hmac
    if fam == "EC":
        assert isinstance(key, ec.EllipticCurvePublicKey)
        ecdsa = ec.ECDSA(_HASHES[alg.hash_name]())
        size = _COORD_BYTES[alg.curve]
        ec_verify = key.verify

        def verify_ec(data: bytes, sig: bytes) -> bool:
            if len(sig) != 2 * size:
                return False
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            try:
                ec_verify(encode_dss_signature(r, s), data, ecdsa)
            except InvalidSignature:
                return False
            return True

        return verify_ec
    if fam in ("RSA", "RSA-PSS"):
        assert isinstance(key, rsa.RSAPublicKey)
        h = _HASHES[alg.hash_name]()
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if fam == "RSA"
            else padding.PSS(mgf=padding.MGF1(_HASHES[alg.hash_name]()), salt_length=alg.hash_bytes)
        )
        rsa_verify = key.verify
        sig_len = (key.key_size + 7) // 8

        def verify_rsa(data: bytes, sig: bytes) -> bool:
            if len(sig) != sig_len:
                return False
            try:
                rsa_verify(sig, data, pad, h)
            except InvalidSignature:
                return False
            return True

        return verify_rsa
    assert isinstance(key, ed25519.Ed25519PublicKey)
    ed_verify = key.verify

    def verify_ed(data: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            ed_verify(sig, data)
        except InvalidSignature:
            return False
        return True

    return verify_ed


def public_key_from_jwk(alg_name: str, jwk: Mapping[str, Any]) -> PublicKey | bytes:
    """Import a JWK for verification with `alg_name`, refusing one whose type or `alg` differs."""
    from joserfc.jwk import JWKRegistry

    alg = ALGORITHMS.get(alg_name)
    if alg is None:
        raise KeyMismatchError(f"unsupported algorithm {alg_name!r}")
    declared = jwk.get("alg")
    if declared is not None and declared != alg_name:
        raise KeyMismatchError(f"key is for {declared}, not {alg_name}")
    if jwk.get("kty") != alg.kty:
        raise KeyMismatchError(f"{alg_name} needs a {alg.kty} key, not {jwk.get('kty')!r}")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyMismatchError(f"key use is {use!r}, not sig")
    # RFC 7517 §4.3: key_ops, when present, must allow "verify" (a key for encryption is not ours).
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeyMismatchError(f"key_ops {ops!r} do not include verify")
    try:
        imported = JWKRegistry.import_key(dict(jwk))
    except Exception as exc:  # joserfc raises several types for malformed keys; one boundary here
        raise KeyMismatchError(f"malformed {alg.kty} key: {exc}") from None
    if alg.family == "HMAC":
        raw = imported.raw_value
        if not isinstance(raw, bytes):
            raise KeyMismatchError("malformed oct key")
        key: PublicKey | bytes = raw
    else:
        pub = imported.public_key
        if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise KeyMismatchError(f"{alg_name} cannot use a {type(pub).__name__}")
        if alg.family == "OKP" and jwk.get("crv") != "Ed25519":
            raise KeyMismatchError(f"{alg_name} needs crv Ed25519")
        key = pub
    check_key(alg, key)
    return key


def public_jwk(alg: Algorithm, key: PrivateKey) -> tuple[dict[str, Any], str]:
    """The public JWK (without kid) and its RFC 7638 thumbprint."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    imported: ECKey | RSAKey | OKPKey
    if isinstance(key, rsa.RSAPrivateKey):
        imported = RSAKey.import_key(key.public_key())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        imported = ECKey.import_key(key.public_key())
    else:
        imported = OKPKey.import_key(key.public_key())
    jwk = {str(k): v for k, v in imported.as_dict(private=False).items()}
    return jwk, imported.thumbprint()


def public_jwk_from_public_key(key: PublicKey) -> tuple[dict[str, Any], str]:
    """The JWK (without kid) and RFC 7638 thumbprint of a public key held without its private half
    (a Vault Transit key, whose private half never leaves Vault)."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    imported: ECKey | RSAKey | OKPKey
    if isinstance(key, rsa.RSAPublicKey):
        imported = RSAKey.import_key(key)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        imported = ECKey.import_key(key)
    else:
        imported = OKPKey.import_key(key)
    jwk = {str(k): v for k, v in imported.as_dict(private=False).items()}
    return jwk, imported.thumbprint()
