"""The strict JWK set loader (`jwks_service.jwkset`, in the core since the server loads its
`private_key_jwt` clients' key sets with it), under the SDK's name for it."""

from __future__ import annotations

from ..jwkset import ASYMMETRIC_ALGORITHMS, MAX_KEYS, KeyRing, KeySetError, load_key, load_key_set

__all__ = ["ASYMMETRIC_ALGORITHMS", "MAX_KEYS", "KeyRing", "KeySetError", "load_key", "load_key_set"]
