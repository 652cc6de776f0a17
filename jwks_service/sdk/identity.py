"""How a verifier names itself to the issuer: the ``JWKS-Verifier`` header of its JWKS requests, with
which the issuer counts who holds which of its keys (API.md §6 "Adoption")."""

from __future__ import annotations

import secrets

# The name a verifier gives itself when none is passed: Verifier(..., name="orders-api") names the service.
DEFAULT_VERIFIER_NAME = "jwks-service-sdk"
MAX_VERIFIER_NAME = 100


def verifier_header(name: str) -> str:
    """``<name>/<instance id>``: the instance id is 8 random hex characters, new for every verifier, so
    that each running verifier counts once and a restarted one is a new fetcher."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_VERIFIER_NAME or not all("!" <= c <= "~" for c in name):
        raise ValueError(f"name: 1 to {MAX_VERIFIER_NAME} printable ASCII characters without spaces (got {name!r})")
    return f"{name}/{secrets.token_hex(4)}"
