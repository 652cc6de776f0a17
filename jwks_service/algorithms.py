"""The JWS algorithms we sign and verify with (RFC 7518, RFC 8037, RFC 9864), and their parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

Family = Literal["HMAC", "RSA", "RSA-PSS", "EC", "OKP"]


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    family: Family
    hash_name: str  # sha256 / sha384 / sha512 ("" for EdDSA, which hashes internally)
    hash_bytes: int
    curve: str = ""  # JWK crv for EC / OKP
    default_key_bits: int = 0

    @property
    def symmetric(self) -> bool:
        return self.family == "HMAC"

    @property
    def kty(self) -> str:
        return {"HMAC": "oct", "RSA": "RSA", "RSA-PSS": "RSA", "EC": "EC", "OKP": "OKP"}[self.family]


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("HS256", "HMAC", "sha256", 32, default_key_bits=256),
        Algorithm("HS384", "HMAC", "sha384", 48, default_key_bits=384),
        Algorithm("HS512", "HMAC", "sha512", 64, default_key_bits=512),
        Algorithm("RS256", "RSA", "sha256", 32, default_key_bits=2048),
        Algorithm("RS384", "RSA", "sha384", 48, default_key_bits=3072),
        Algorithm("RS512", "RSA", "sha512", 64, default_key_bits=4096),
        Algorithm("PS256", "RSA-PSS", "sha256", 32, default_key_bits=2048),
        Algorithm("PS384", "RSA-PSS", "sha384", 48, default_key_bits=3072),
        Algorithm("PS512", "RSA-PSS", "sha512", 64, default_key_bits=4096),
        Algorithm("ES256", "EC", "sha256", 32, curve="P-256", default_key_bits=256),
        Algorithm("ES384", "EC", "sha384", 48, curve="P-384", default_key_bits=384),
        Algorithm("ES512", "EC", "sha512", 64, curve="P-521", default_key_bits=521),
        # Both names sign with Ed25519; the header carries the configured name (RFC 8037 / RFC 9864).
        Algorithm("EdDSA", "OKP", "", 0, curve="Ed25519", default_key_bits=256),
        Algorithm("Ed25519", "OKP", "", 0, curve="Ed25519", default_key_bits=256),
    )
}

# Minimum key sizes (RFC 7518 §3.2: an HMAC key at least the hash size, and never under 256 bits;
# §3.3: RSA keys of 2048 bits or more).
MIN_HMAC_BITS = 256
MIN_RSA_BITS = 2048


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(name) from None


# Vault Transit's key types and the sizes it makes (its API docs, "Create key"): facts about each algorithm,
# kept here so that checking the settings needs no Vault client.
TRANSIT_RSA_KEY_BITS = (2048, 3072, 4096)
TRANSIT_HMAC_KEY_BYTES = (32, 512)  # Transit's bounds for an hmac key's key_size
_TRANSIT_EC_TYPES = {"P-256": "ecdsa-p256", "P-384": "ecdsa-p384", "P-521": "ecdsa-p521"}


@dataclass(frozen=True, slots=True)
class TransitKeySpec:
    """How a keyset's algorithm maps to a Transit key."""

    key_type: str  # rsa-2048 | ... | ecdsa-p256 | ... | ed25519 | hmac
    key_size: int | None = None  # bytes, hmac keys only


def transit_key_spec(alg: Algorithm, key_bits: int) -> TransitKeySpec:
    """The Transit key type for `alg`; ConfigError for a size Transit cannot make."""
    fam = alg.family
    if fam == "HMAC":
        least = max(MIN_HMAC_BITS, alg.hash_bytes * 8)
        if key_bits % 8 or not least <= key_bits <= TRANSIT_HMAC_KEY_BYTES[1] * 8:
            raise ConfigError(
                f"key_bits: a Vault Transit {alg.name} key is a whole number of bytes from {least} to "
                f"{TRANSIT_HMAC_KEY_BYTES[1] * 8} bits, not {key_bits}"
            )
        return TransitKeySpec("hmac", key_bits // 8)
    if fam in ("RSA", "RSA-PSS"):
        if key_bits not in TRANSIT_RSA_KEY_BITS:
            raise ConfigError(f"key_bits: Vault Transit RSA keys are 2048, 3072 or 4096 bits, not {key_bits}")
        return TransitKeySpec(f"rsa-{key_bits}")
    if fam == "EC":
        return TransitKeySpec(_TRANSIT_EC_TYPES[alg.curve])
    return TransitKeySpec("ed25519")
