"""A `redis-server` with ACL users, and OpenBao set up to hand out its credentials, for the tests of the
service's own Redis credentials (API.md §7; tests/contract and tests/integration test_redis_credentials).

`AclRedis`: the default user has no password (requirepass off) but may only PING, so a client that does
not authenticate as its user gets NOPERM; `admin` may do everything (the tests, and Vault's database
engine); `user(name, password)` and `rotate(name, new)` set a user's one password. `rotate` then closes the
user's connections (CLIENT KILL USER), so that every client must authenticate again, at once.

`VaultRedis`: on the session's OpenBao, a KV v2 mount and a database secrets engine mount of this test
alone (the redis-database-plugin, pointed at the AclRedis as `admin`), and a token for the service holding
only deploy/vault-policy.hcl and deploy/vault-policy-redis.hcl (its paths moved to those mounts).
`hashed_passwords_in` finds passwords known only by their hash (Vault's dynamic ones: Redis keeps their
SHA-256) in a text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import string
import uuid
from pathlib import Path
from typing import Any

import redis
from redisserver import RedisServer
from support import PROJECT_ROOT

from bench.baoserver import OpenBaoServer


class AclRedis(RedisServer):
    def __init__(self, workdir: Path, *, url_user: str = "", **kw: Any) -> None:
        super().__init__(workdir, **kw)
        self.admin_password = "admin-" + secrets.token_urlsafe(12)
        self.url = f"redis://{url_user + '@' if url_user else ''}127.0.0.1:{self.port}/0"
        self._users: dict[str, str] = {}

    def start(self) -> None:
        """Start the server (nothing to do when it runs) and set its users up."""
        if self.proc is not None and self.proc.poll() is None:
            return
        super().start()
        with redis.Redis(port=self.port) as r:  # the default user, before it is restricted
            r.execute_command("ACL", "SETUSER", "admin", "on", f">{self.admin_password}", "~*", "&*", "+@all")
            for name, password in self._users.items():  # after a restart
                r.execute_command("ACL", "SETUSER", name, "on", "resetpass", f">{password}", "~*", "&*", "+@all")
            r.execute_command("ACL", "SETUSER", "default", "nopass", "resetkeys", "resetchannels", "-@all", "+ping")

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, username="admin", password=self.admin_password, decode_responses=True)

    def user(self, name: str, password: str) -> None:
        """`name` may do everything, with `password` only (set at start when the server is not running)."""
        self._users[name] = password
        if self.proc is None:
            return
        with self.admin() as r:
            r.execute_command("ACL", "SETUSER", name, "on", "resetpass", f">{password}", "~*", "&*", "+@all")

    def rotate(self, name: str, new: str) -> int:
        """`name`'s one password becomes `new` (the old one stops working); its connections are closed.
        How many were."""
        self.user(name, new)
        with self.admin() as r:
            return int(r.execute_command("CLIENT", "KILL", "USER", name))

    def users(self) -> set[str]:
        with self.admin() as r:
            return {str(u) for u in r.execute_command("ACL", "USERS")}

    def password_hashes(self, name: str) -> set[str]:
        """The SHA-256 (hex) of `name`'s passwords, as Redis keeps them (empty when there is no such user)."""
        with self.admin() as r:
            user = r.acl_getuser(name)
        return set(user["passwords"]) if user else set()


def hashed_passwords_in(text: str, hashes: set[str], length: int) -> set[str]:
    """The hashes of `hashes` whose password is in `text`: every run of `length` characters of the
    alphabet of Vault's generated passwords is hashed and looked up."""
    alphabet = set(string.ascii_letters + string.digits + "-")
    found = set()
    for i in range(len(text) - length + 1):
        window = text[i : i + length]
        if window[0] in alphabet and window[-1] in alphabet and set(window) <= alphabet:
            digest = hashlib.sha256(window.encode()).hexdigest()
            if digest in hashes:
                found.add(digest)
    return found


def service_policies(kv_mount: str, db_mount: str) -> str:
    """The two deploy policies, with the Redis paths moved to this test's mounts."""
    transit = (PROJECT_ROOT / "deploy" / "vault-policy.hcl").read_text()
    redis_policy = (PROJECT_ROOT / "deploy" / "vault-policy-redis.hcl").read_text()
    redis_policy = redis_policy.replace('"secret/data/', f'"{kv_mount}/data/').replace(
        '"database/creds/', f'"{db_mount}/creds/'
    )
    return transit + "\n" + redis_policy


class VaultRedis:
    """This test's Vault mounts for the Redis credentials, on the session's OpenBao."""

    def __init__(self, bao: OpenBaoServer, workdir: Path) -> None:
        self.bao = bao
        self.client = bao.client()
        tag = uuid.uuid4().hex[:8]
        self.kv_mount, self.db_mount = f"kv-{tag}", f"db-{tag}"
        self.kv_path = f"{self.kv_mount}/data/jwks-redis"
        self.creds_path = f"{self.db_mount}/creds/jwks-redis"
        self.client.sys.enable_secrets_engine("kv", path=self.kv_mount, options={"version": "2"})
        self.client.sys.enable_secrets_engine("database", path=self.db_mount)
        self.policy = f"jwks-service-{tag}"
        self.client.sys.create_or_update_policy(self.policy, service_policies(self.kv_mount, self.db_mount))
        token = self.client.auth.token.create(policies=[self.policy], ttl="1h", renewable=True)
        self.token_file = workdir / "vault-token"
        self.token_file.write_text(token["auth"]["client_token"] + "\n")

    def config(self) -> str:
        """The [vault] table of the service."""
        return f'[vault]\naddr = "{self.bao.addr}"\ntoken_file = "{self.token_file}"\n'

    def put_password(self, password: str) -> None:
        self.client.write_data(self.kv_path, data={"data": {"password": password}})

    def database(self, server: AclRedis, *, default_ttl: str, max_ttl: str) -> None:
        """The redis-database-plugin on `server` (as admin), and the role jwks-redis."""
        self.client.write_data(
            f"{self.db_mount}/config/redis",
            data={
                "plugin_name": "redis-database-plugin",
                "host": "127.0.0.1",
                "port": server.port,
                "username": "admin",
                "password": server.admin_password,
                "allowed_roles": "jwks-redis",
            },
        )
        self.client.write_data(
            f"{self.db_mount}/roles/jwks-redis",
            data={
                "db_name": "redis",
                "creation_statements": json.dumps(["~*", "&*", "+@all"]),
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            },
        )

    def close(self) -> None:
        """Undo it all (before the AclRedis stops: disabling the database mount revokes its leases there)."""
        steps = [
            lambda: self.client.sys.disable_secrets_engine(self.db_mount),
            lambda: self.client.sys.disable_secrets_engine(self.kv_mount),
            lambda: self.client.sys.delete_policy(self.policy),
        ]
        for step in steps:
            with contextlib.suppress(Exception):  # e.g. Redis is gone: the leases are dropped anyway
                step()
