"""The JWKS cache (`jwks_service.keycache`, in the core since the server keeps its `private_key_jwt`
clients' key sets by the same rules), under the SDK's name for it."""

from __future__ import annotations

from ..keycache import CacheSettings, KeyCache, Refresh, Verdict, parse_cache_control

__all__ = ["CacheSettings", "KeyCache", "Refresh", "Verdict", "parse_cache_control"]
