"""[store] credential sources against the store URL (configparts.redis_settings): the password comes from
one place, and dynamic credentials bring their own username."""

from __future__ import annotations

import pytest

from jwks_service.config import build_settings
from jwks_service.errors import ConfigError

VAULT = {"addr": "http://127.0.0.1:8200", "token_file": "/run/secrets/vault-token"}


def test_a_url_user_goes_with_a_password_source() -> None:
    s = build_settings({"store": {"url": "redis://jwks@127.0.0.1:6379/0", "password_file": "/run/secrets/redis"}})
    assert s.redis.credential_source == "password_file"
    s = build_settings(
        {
            "store": {"url": "redis://jwks@127.0.0.1:6379/0", "vault_kv": "secret/data/jwks-redis#password"},
            "vault": VAULT,
        }
    )
    assert s.redis.kv_path_field == ("secret/data/jwks-redis", "password") and s.uses_vault


def test_a_url_password_beside_a_source_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"store": {"url": "redis://jwks:s3cret@127.0.0.1:6379/0", "password_file": "/run/x"}})
    assert "store.url: has a password, but store.password_file gives it" in info.value.description
    assert "s3cret" not in info.value.description


def test_dynamic_credentials_bring_their_own_username() -> None:
    with pytest.raises(ConfigError, match=r"store\.url: names a user, but store\.vault_creds gives both"):
        build_settings(
            {
                "store": {"url": "redis://jwks@127.0.0.1:6379/0", "vault_creds": "database/creds/jwks-redis"},
                "vault": VAULT,
            }
        )
    s = build_settings(
        {"store": {"url": "redis://127.0.0.1:6379/0", "vault_creds": "database/creds/jwks-redis"}, "vault": VAULT}
    )
    assert s.redis.credential_source == "vault_creds"
