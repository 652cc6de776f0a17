"""Settings: one TOML file plus ``JWKS_`` environment overrides, validated before anything starts.

Validation collects every problem as one line ``field: rule`` and refuses the whole file, so the
service never starts half-configured.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import configparts as rules
from .addresses import DEFAULT_ISSUER, DEFAULT_LISTEN, default_issuer, redact_url, split_listen, valid_listen
from .algorithms import ALGORITHMS, MIN_HMAC_BITS, MIN_RSA_BITS, transit_key_spec
from .configparts import (
    AdoptionSettings,
    LogSettings,
    RedisSettings,
    format_duration,
    parse_duration,
)
from .errors import ConfigError
from .model import KeysetPolicy

__all__ = ["AdoptionSettings", "LogSettings", "RedisSettings", "Settings", "format_duration", "parse_duration"]

DEFAULT_STORE_URL = "sqlite:///var/jwks.db"
DEFAULT_KEK_FILE = "var/kek"
DEFAULT_AUDIT_RETENTION = "400d"
MIN_AUDIT_RETENTION = 86400

log = logging.getLogger("jwks_service.config")

_KEYSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
KEK_TRANSIT_PREFIX = "vault-transit:"
_TRANSIT_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_MOUNT_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})*")

# Rotation presets follow common practice: HMAC JWT secrets every 60-90 days, RSA / ECDSA / EdDSA
# signing keys every 6-12 months; client secrets every 30-90 days. Defaults sit inside the ranges;
# `check-config` warns about a configured value outside them.
DEFAULT_ROTATION_HMAC = "90d"
DEFAULT_ROTATION_ASYMMETRIC = "180d"
PRESET_ROTATION_HMAC = (60 * 86400, 90 * 86400)
PRESET_ROTATION_ASYMMETRIC = (180 * 86400, 365 * 86400)  # 6-12 months; the default 180d sits inside
DEFAULT_CLIENT_SECRET_MAX_AGE = "90d"  # noqa: S105 - a duration, not a secret
DEFAULT_EVENTS_MAX_STREAMS = 1000
DEFAULT_EVENTS_MAX_STREAMS_PER_SOURCE = 16
PRESET_CLIENT_SECRET_MAX_AGE = (30 * 86400, 90 * 86400)


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """Where Vault is and how to log in: a token (token_file, else VAULT_TOKEN) or AppRole (role_id
    with secret_id_file, else VAULT_SECRET_ID). Secrets themselves are never held here."""

    addr: str = ""
    token_file: str = ""
    transit_mount: str = "transit"
    role_id: str = ""  # AppRole: not secret (like a user name); VAULT_ROLE_ID is honoured
    secret_id_file: str = ""  # AppRole secret_id, re-read at every login; else VAULT_SECRET_ID
    auth_mount: str = "approle"
    max_batch: int = 256  # most signatures per Transit call (micro-batching); 1: one call per token
    ca_file: str = ""  # PEM CA bundle that Vault's certificate is verified against; else VAULT_CACERT
    namespace: str = ""  # Vault / OpenBao namespace (X-Vault-Namespace); else VAULT_NAMESPACE

    @property
    def approle(self) -> bool:
        return bool(self.role_id)


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str = DEFAULT_ISSUER
    listen: str = DEFAULT_LISTEN
    store_url: str = DEFAULT_STORE_URL
    kek_file: str = DEFAULT_KEK_FILE
    kek: str = ""
    jwks_max_age: int = 300
    client_secret_max_age: int = 90 * 86400  # when `clients list` says a secret is due for rotation
    clients_allow_http_jwks_uri: bool = False  # [clients] allow_http_jwks_uri: any http:// jwks_uri
    audit_retention: int = 400 * 86400  # audit events older than this are pruned
    audit_file: str = ""  # [audit] file: also append each event here, one JSON object a line
    audit_syslog: bool = False  # [audit] syslog: also send each event to the local syslog
    vault: VaultSettings = field(default_factory=VaultSettings)
    keysets: Mapping[str, KeysetPolicy] = field(default_factory=dict)
    config_file: str = ""  # where the settings came from ("" = embedded defaults)
    # [events]: open /keys/events streams per replica, in total and per source address
    events_max_streams: int = DEFAULT_EVENTS_MAX_STREAMS
    events_max_streams_per_source: int = DEFAULT_EVENTS_MAX_STREAMS_PER_SOURCE
    # [http] trusted_proxies: addresses / networks whose X-Forwarded-For is believed (none by default)
    trusted_proxies: tuple[str, ...] = ()
    issuer_configured: bool = False  # False: the embedded default, http(s)://<listen> (follows serve --listen)
    from_environment: tuple[str, ...] = ()  # the JWKS_* / VAULT_* variables that set a value, by name
    # [http] tls_cert / tls_key: serve HTTPS with these PEM files (re-read on SIGHUP); admin_listen:
    # HOST:PORT where /admin/* and /metrics are served instead of on `listen`
    tls_cert: str = ""
    tls_key: str = ""
    admin_listen: str = ""
    adoption: AdoptionSettings = field(default_factory=AdoptionSettings)  # [adoption]
    log: LogSettings = field(default_factory=LogSettings)  # [log]
    redis: RedisSettings = field(default_factory=RedisSettings)  # [store] ca_file, credentials, revocation_acks

    @property
    def store_display(self) -> str:
        """store.url without a password, for messages and logs."""
        return redact_url(self.store_url)

    @property
    def kek_transit_key(self) -> str:
        """The Transit key that wraps the KEK (``secrets.kek = "vault-transit:<key>"``), or ""."""
        return self.kek[len(KEK_TRANSIT_PREFIX) :] if self.kek.startswith(KEK_TRANSIT_PREFIX) else ""

    @property
    def uses_vault(self) -> bool:
        """Whether the service needs a Vault login: a keyset with backend = vault, or a wrapped KEK."""
        vault_keysets = any(p.backend == "vault" for p in self.keysets.values())
        return bool(self.kek_transit_key or self.redis.vault_kv or self.redis.vault_creds) or vault_keysets

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def embedded(self) -> bool:
        """Embedded mode: a single-node SQLite store (a KEK file may be generated on first start)."""
        return self.store_url.startswith("sqlite:")

    @property
    def stale_if_error(self) -> int:
        """How long a cache may serve a stale JWKS when we are unreachable without missing a key.

        A copy fetched just before a next key is published is fresh for max_age; that key signs no
        earlier than prepublish later, and verifiers allow leeway: prepublish - max_age - leeway.
        """
        margins = [p.prepublish - self.jwks_max_age - p.leeway for p in self.keysets.values()]
        return max(0, min(margins, default=0))

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path


_TOP_KEYS = {
    "issuer",
    "listen",
    "store",
    "vault",
    "secrets",
    "jwks",
    "clients",
    "keysets",
    "audit",
    "events",
    "http",
    "adoption",
    "log",
}
_SECTION_KEYS = {
    "events": {"max_streams", "max_streams_per_source"},
    "http": {"trusted_proxies", "tls_cert", "tls_key", "admin_listen"},
    "store": {"url", "ca_file", "password_file", "vault_kv", "vault_creds", "revocation_acks"},
    "adoption": {"window", "max_fetchers", "max_per_source"},
    "log": {"format", "level", "access", "access_sample"},
    "vault": {
        "addr",
        "token_file",
        "transit_mount",
        "role_id",
        "secret_id_file",
        "auth_mount",
        "max_batch",
        "ca_file",
        "namespace",
    },
    "secrets": {"kek_file", "kek"},
    "jwks": {"max_age"},
    "clients": {"secret_max_age", "allow_http_jwks_uri"},
    "audit": {"retention", "file", "syslog"},
}
_KEYSET_KEYS = {
    "alg",
    "backend",
    "rotation_period",
    "prepublish",
    "token_ttl",
    "leeway",
    "verify_window",
    "key_size",
    "adoption_gate",
    "adoption_max_wait",
}


def _ours(path: list[str]) -> bool:
    """Whether a ``JWKS_`` variable has the shape of a setting: ``ISSUER``, ``<SECTION>__<KEY>`` or
    ``KEYSETS__<NAME>__<KEY>``. A wrong key in that shape is a typo (refused by validation, naming it);
    any other shape (``JWKS_URL``) belongs to another program in the same environment."""
    if not all(path):
        return False
    if len(path) == 1:
        return path[0] in _TOP_KEYS - _SECTION_KEYS.keys() - {"keysets"}
    if len(path) == 2:
        return path[0] in _SECTION_KEYS
    return len(path) == 3 and path[0] == "keysets"


def split_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The settings tree of the ``JWKS_`` variables, and the names of those that are not settings."""
    tree: dict[str, Any] = {}
    foreign: list[str] = []
    for name, value in environ.items():
        if not name.startswith("JWKS_") or name == "JWKS_CONFIG":
            continue
        path = [p.lower() for p in name[5:].split("__")]
        if not _ours(path):
            foreign.append(name)
            continue
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return tree, sorted(foreign)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``JWKS_STORE__URL=x`` -> ``{"store": {"url": "x"}}``; ``JWKS_CONFIG`` names the file itself;
    variables that are not settings (``JWKS_URL``) are left out."""
    return split_env(environ)[0]


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(config_file: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the file (``--config``, else ``JWKS_CONFIG``, else none) and the environment.

    Vault's own variables are honoured where the file and ``JWKS_VAULT__*`` say nothing: VAULT_ADDR,
    VAULT_ROLE_ID here; VAULT_TOKEN and VAULT_SECRET_ID (secrets) only when logging in.
    """
    env = os.environ if environ is None else environ
    path = config_file or env.get("JWKS_CONFIG") or ""
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config: file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    overrides, foreign = split_env(env)
    if foreign:
        log.warning(
            "ignoring environment variable%s %s: not jwks-service settings (those are JWKS_ISSUER, JWKS_LISTEN,"
            " JWKS_<SECTION>__<KEY> and JWKS_KEYSETS__<NAME>__<KEY>)",
            "s" if len(foreign) > 1 else "",
            ", ".join(foreign),
        )
    raw = _merge(raw, overrides)
    used = [name for name in env if name.startswith("JWKS_") and name != "JWKS_CONFIG" and name not in foreign]
    for variable, key in (("VAULT_ADDR", "addr"), ("VAULT_ROLE_ID", "role_id")):
        if env.get(variable) and not (isinstance(raw.get("vault"), Mapping) and raw["vault"].get(key)):
            raw = _merge(raw, {"vault": {key: env[variable]}})  # Vault's own variables are honoured
            used.append(variable)
    settings = build_settings(raw, config_file=path, environ=env)
    return replace(settings, from_environment=tuple(sorted(used)))


def build_settings(raw: Mapping[str, Any], config_file: str = "", environ: Mapping[str, str] | None = None) -> Settings:
    """Validate `raw`. With `environ`, also check that credentials named by the settings can come
    from there (VAULT_SECRET_ID); without it that check waits for the login at start."""
    problems: list[str] = []

    def want_str(value: object, name: str) -> str:
        if not isinstance(value, str):
            problems.append(f"{name}: must be a string")
            return ""
        return value

    def want_table(value: object, name: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            problems.append(f"{name}: must be a table")
            return {}
        return value

    def duration(value: object, name: str, *, positive: bool = True) -> int:
        return rules.duration(value, name, problems, positive=positive)

    for key in raw:
        if key not in _TOP_KEYS:
            problems.append(f"{key}: unknown setting (known: {', '.join(sorted(_TOP_KEYS))})")
    sections: dict[str, Mapping[str, Any]] = {}
    for section, allowed in _SECTION_KEYS.items():
        table = want_table(raw.get(section, {}), section)
        sections[section] = table
        for key in table:
            if key not in allowed:
                problems.append(f"{section}.{key}: unknown setting (known: {', '.join(sorted(allowed))})")

    listen = want_str(raw.get("listen", DEFAULT_LISTEN), "listen")
    if isinstance(raw.get("listen", DEFAULT_LISTEN), str) and not valid_listen(listen):
        problems.append(f"listen: must be HOST:PORT with a port from 1 to 65535 (got {listen!r})")
    http = sections["http"]
    tls_cert = want_str(http.get("tls_cert", ""), "http.tls_cert").strip()
    tls_key = want_str(http.get("tls_key", ""), "http.tls_key").strip()
    if bool(tls_cert) != bool(tls_key):
        given, missing = ("tls_cert", "tls_key") if tls_cert else ("tls_key", "tls_cert")
        problems.append(f"http.{missing}: http.{given} is set; HTTPS needs both the certificate and its key")
    # The embedded default issuer follows the address and the scheme served; a configured one is never changed.
    embedded_issuer = default_issuer(listen, tls=bool(tls_cert and tls_key))
    issuer = want_str(raw.get("issuer", embedded_issuer), "issuer")
    parts = urlsplit(issuer)
    bad_url = parts.scheme not in ("http", "https") or not parts.netloc or bool(parts.query or parts.fragment)
    if isinstance(raw.get("issuer", embedded_issuer), str) and bad_url:
        problems.append(f"issuer: must be an http(s) URL without query or fragment (got {issuer!r})")

    store_url = want_str(sections["store"].get("url", DEFAULT_STORE_URL), "store.url")
    if isinstance(sections["store"].get("url", DEFAULT_STORE_URL), str):
        problems.extend(rules.store_url_problems(store_url))

    vault_table = sections["vault"]
    vault = VaultSettings(
        addr=want_str(vault_table.get("addr", ""), "vault.addr"),
        token_file=want_str(vault_table.get("token_file", ""), "vault.token_file"),
        transit_mount=want_str(vault_table.get("transit_mount", "transit"), "vault.transit_mount"),
        role_id=want_str(vault_table.get("role_id", ""), "vault.role_id").strip(),
        secret_id_file=want_str(vault_table.get("secret_id_file", ""), "vault.secret_id_file"),
        auth_mount=want_str(vault_table.get("auth_mount", "approle"), "vault.auth_mount").strip("/"),
        max_batch=rules.max_batch(vault_table.get("max_batch", 256), problems),
        ca_file=want_str(vault_table.get("ca_file", ""), "vault.ca_file").strip(),
        namespace=want_str(vault_table.get("namespace", ""), "vault.namespace").strip().strip("/"),
    )
    if vault.namespace and not _MOUNT_PATH.fullmatch(vault.namespace):
        problems.append(
            f"vault.namespace: must be a namespace path such as team-a or org/team-a (got {vault.namespace!r})"
        )
    if vault.role_id and vault.token_file:
        problems.append("vault.role_id: log in either with vault.token_file or with AppRole (vault.role_id), not both")
    if vault.secret_id_file and not vault_table.get("role_id"):
        problems.append("vault.secret_id_file: an AppRole secret_id needs vault.role_id (or VAULT_ROLE_ID)")
    if vault.role_id and not vault.secret_id_file and environ is not None and not environ.get("VAULT_SECRET_ID"):
        problems.append("vault.secret_id_file: vault.role_id is set; give vault.secret_id_file or set VAULT_SECRET_ID")
    if isinstance(vault_table.get("auth_mount", "approle"), str) and not _MOUNT_PATH.fullmatch(vault.auth_mount):
        problems.append(
            f"vault.auth_mount: must be the path of an auth method mount, e.g. approle (got {vault.auth_mount!r})"
        )

    secrets_table = sections["secrets"]
    kek_file = want_str(secrets_table.get("kek_file", DEFAULT_KEK_FILE), "secrets.kek_file")
    if isinstance(secrets_table.get("kek_file", DEFAULT_KEK_FILE), str) and not kek_file.strip():
        problems.append("secrets.kek_file: must name a file")
    kek = want_str(secrets_table.get("kek", ""), "secrets.kek").strip()
    kek_key = kek[len(KEK_TRANSIT_PREFIX) :] if kek.startswith(KEK_TRANSIT_PREFIX) else ""
    if kek and not _TRANSIT_KEY_NAME.fullmatch(kek_key):
        problems.append(
            f"secrets.kek: must be vault-transit:<Transit key name>, e.g. vault-transit:jwks-kek (got {kek!r})"
        )
    elif kek and not vault.addr:
        problems.append("vault.addr: secrets.kek wraps the KEK with Vault Transit; set vault.addr or VAULT_ADDR")

    redis = rules.redis_settings(sections["store"], store_url, vault.addr, problems)
    adoption = rules.adoption_settings(sections["adoption"], problems)
    log_settings = rules.log_settings(sections["log"], problems)
    max_age = duration(sections["jwks"].get("max_age", "5m"), "jwks.max_age")
    secret_max_age = duration(
        sections["clients"].get("secret_max_age", DEFAULT_CLIENT_SECRET_MAX_AGE), "clients.secret_max_age"
    )
    audit_retention = duration(sections["audit"].get("retention", DEFAULT_AUDIT_RETENTION), "audit.retention")
    if 0 < audit_retention < MIN_AUDIT_RETENTION:
        problems.append(f"audit.retention: at least 1d (got {format_duration(audit_retention)})")
    audit_file = sections["audit"].get("file", "")
    if not isinstance(audit_file, str):
        problems.append(f"audit.file: a file name (got {audit_file!r})")
        audit_file = ""
    audit_syslog = rules.flag(sections["audit"].get("syslog", False), "audit.syslog", problems)
    allow_http_jwks_uri = rules.flag(
        sections["clients"].get("allow_http_jwks_uri", False), "clients.allow_http_jwks_uri", problems
    )

    max_streams = rules.whole_number(
        sections["events"].get("max_streams", DEFAULT_EVENTS_MAX_STREAMS),
        "events.max_streams",
        1,
        100_000,
        DEFAULT_EVENTS_MAX_STREAMS,
        problems,
    )
    max_streams_per_source = rules.whole_number(
        sections["events"].get("max_streams_per_source", DEFAULT_EVENTS_MAX_STREAMS_PER_SOURCE),
        "events.max_streams_per_source",
        1,
        max_streams,
        min(DEFAULT_EVENTS_MAX_STREAMS_PER_SOURCE, max_streams),
        problems,
    )
    trusted_proxies = rules.trusted_proxies(http.get("trusted_proxies", []), problems)
    admin_listen = want_str(http.get("admin_listen", ""), "http.admin_listen").strip()
    if admin_listen and not valid_listen(admin_listen):
        problems.append(f"http.admin_listen: must be HOST:PORT with a port from 1 to 65535 (got {admin_listen!r})")
    elif admin_listen and valid_listen(listen) and split_listen(admin_listen)[1] == split_listen(listen)[1]:
        problems.append(f"http.admin_listen: must use another port than listen ({listen})")

    keysets_raw = want_table(raw.get("keysets", {"default": {"alg": "ES256"}}), "keysets")
    if not keysets_raw:
        problems.append("keysets: at least one keyset is needed")
    keysets: dict[str, KeysetPolicy] = {}
    for name, table_value in keysets_raw.items():
        prefix = f"keysets.{name}"
        if not _KEYSET_NAME.fullmatch(name):
            prefix = f"keysets.{name if name.isprintable() else repr(name)}"
            problems.append(f"{prefix}: keyset names are 1-64 of a-z 0-9 _ - starting with a letter or digit")
            continue
        table = want_table(table_value, prefix)
        for key in table:
            if key not in _KEYSET_KEYS:
                problems.append(f"{prefix}.{key}: unknown setting (known: {', '.join(sorted(_KEYSET_KEYS))})")
        alg_name = want_str(table.get("alg", "ES256"), f"{prefix}.alg")
        alg = ALGORITHMS.get(alg_name)
        if alg is None:
            problems.append(f"{prefix}.alg: unknown algorithm {alg_name!r} (known: {', '.join(ALGORITHMS)})")
            continue
        backend = want_str(table.get("backend", "local"), f"{prefix}.backend")
        if backend == "vault" and not vault.addr:
            problems.append(f"vault.addr: keysets.{name} uses backend = vault; set vault.addr or VAULT_ADDR")
        if backend == "vault" and kek_key and kek_key == f"jwks-{name}":
            problems.append(
                f"secrets.kek: Transit key {kek_key} is also the signing key of keysets.{name}; name another key"
            )
        if backend not in ("local", "vault"):
            problems.append(f"{prefix}.backend: must be local or vault (got {backend!r})")
        default_rotation = DEFAULT_ROTATION_HMAC if alg.symmetric else DEFAULT_ROTATION_ASYMMETRIC
        rotation = duration(table.get("rotation_period", default_rotation), f"{prefix}.rotation_period")
        prepublish = duration(table.get("prepublish", "1h"), f"{prefix}.prepublish")
        token_ttl = duration(table.get("token_ttl", "15m"), f"{prefix}.token_ttl")
        leeway = duration(table.get("leeway", "30s"), f"{prefix}.leeway", positive=False)
        derived = token_ttl + leeway + max_age
        window = derived
        if "verify_window" in table:
            configured = duration(table["verify_window"], f"{prefix}.verify_window")
            if configured and configured < derived:
                problems.append(
                    f"{prefix}.verify_window: may only lengthen the derived window token_ttl + leeway + "
                    f"jwks.max_age = {format_duration(derived)} (got {format_duration(configured)})"
                )
            window = max(configured, derived)
        if prepublish and max_age and prepublish < max_age + leeway:
            problems.append(
                f"{prefix}.prepublish: must be at least jwks.max_age + leeway = {format_duration(max_age + leeway)}"
                f" so every cached JWKS holds the next key before it signs (got {format_duration(prepublish)})"
            )
        if rotation and prepublish and rotation < prepublish:
            problems.append(f"{prefix}.rotation_period: must be at least prepublish ({format_duration(prepublish)})")
        key_bits = rules.key_bits(table.get("key_size"), alg_name, alg.family, alg.default_key_bits, prefix, problems)
        if alg.symmetric and key_bits and key_bits < max(MIN_HMAC_BITS, alg.hash_bytes * 8):
            problems.append(
                f"{prefix}.key_size: an {alg_name} key needs at least {max(MIN_HMAC_BITS, alg.hash_bytes * 8)} bits"
                f" (got {key_bits})"
            )
        if alg.family in ("RSA", "RSA-PSS") and key_bits and key_bits < MIN_RSA_BITS:
            problems.append(f"{prefix}.key_size: an RSA key needs at least {MIN_RSA_BITS} bits (got {key_bits})")
        if backend == "vault" and key_bits:
            try:  # Transit makes only some key sizes
                transit_key_spec(alg, key_bits)
            except ConfigError as exc:
                problems.append(f"{prefix}.{exc.description.replace('key_bits', 'key_size', 1)}")
        gate = rules.fraction(table.get("adoption_gate", 0.95), f"{prefix}.adoption_gate", 0.95, problems)
        max_wait = duration(table.get("adoption_max_wait", "7d"), f"{prefix}.adoption_max_wait", positive=False)
        keysets[name] = KeysetPolicy(
            name=name,
            alg=alg_name,
            backend=backend,
            rotation_period=rotation,
            prepublish=prepublish,
            token_ttl=token_ttl,
            leeway=leeway,
            verify_window=window,
            key_bits=key_bits,
            adoption_gate=gate,
            adoption_max_wait=max_wait,
        )

    if problems:
        raise ConfigError("\n".join(problems))
    return Settings(
        issuer=issuer,
        listen=listen,
        store_url=store_url,
        kek_file=kek_file,
        kek=kek,
        jwks_max_age=max_age,
        client_secret_max_age=secret_max_age,
        clients_allow_http_jwks_uri=allow_http_jwks_uri,
        audit_retention=audit_retention,
        audit_file=audit_file,
        audit_syslog=audit_syslog,
        vault=vault,
        keysets=keysets,
        config_file=config_file,
        events_max_streams=max_streams,
        events_max_streams_per_source=max_streams_per_source,
        trusted_proxies=trusted_proxies,
        issuer_configured="issuer" in raw,
        tls_cert=tls_cert,
        tls_key=tls_key,
        admin_listen=admin_listen,
        adoption=adoption,
        log=log_settings,
        redis=redis,
    )


def policy_warnings(settings: Settings) -> list[str]:
    """Rotation periods outside common practice: allowed, but worth a second look."""
    warnings = []
    for p in settings.keysets.values():
        symmetric = ALGORITHMS[p.alg].symmetric
        low, high = PRESET_ROTATION_HMAC if symmetric else PRESET_ROTATION_ASYMMETRIC
        kind = "HMAC secrets" if symmetric else "RSA / ECDSA / EdDSA signing keys"
        if not low <= p.rotation_period <= high:
            warnings.append(
                f"keysets.{p.name}.rotation_period: {format_duration(p.rotation_period)} is outside the usual "
                f"{format_duration(low)}-{format_duration(high)} for {kind}"
            )
    low, high = PRESET_CLIENT_SECRET_MAX_AGE
    if not low <= settings.client_secret_max_age <= high:
        warnings.append(
            f"clients.secret_max_age: {format_duration(settings.client_secret_max_age)} is outside the usual "
            f"{format_duration(low)}-{format_duration(high)} for client secrets"
        )
    return warnings
