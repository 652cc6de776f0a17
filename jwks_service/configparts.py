"""The value rules of the settings and the smaller sections (config.py builds the whole).

Each rule appends one line ``field: rule`` to ``problems`` and returns a usable default, so that
validation reports every problem of a file at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VAULT_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})+")
_KV_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,128}")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")


def parse_duration(value: object, field_name: str) -> int:
    """``<int><s|m|h|d>`` to seconds."""
    if not isinstance(value, str) or not (m := _DURATION.fullmatch(value.strip())):
        raise ConfigError(f"{field_name}: must be a duration like 30s, 15m, 1h or 90d (got {value!r})")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def duration(value: object, name: str, problems: list[str], *, positive: bool = True) -> int:
    try:
        seconds = parse_duration(value, name)
    except ConfigError as exc:
        problems.append(exc.description)
        return 0
    if positive and seconds <= 0:
        problems.append(f"{name}: must be longer than 0s")
    return seconds


def text(value: object, name: str, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{name}: must be a string")
        return ""
    return value


def max_batch(value: Any, problems: list[str]) -> int:
    return whole_number(value, "vault.max_batch", 1, 1000, 256, problems)


def flag(value: Any, name: str, problems: list[str]) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"  # from a JWKS_* variable
    if not isinstance(value, bool):
        problems.append(f"{name}: true or false (got {value!r})")
        return False
    return value


def whole_number(value: Any, name: str, low: int, high: int, default: int, problems: list[str]) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # from a JWKS_* variable
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{name}: a whole number from {low} to {high} (got {value!r})")
        return default
    return value


def fraction(value: Any, name: str, default: float, problems: list[str], *, zero_ok: bool = True) -> float:
    """A share from 0 to 1 (``0.95``); from the environment, a decimal string."""
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    ok = not isinstance(number, bool) and isinstance(number, int | float) and 0 <= number <= 1
    if not ok or (number == 0 and not zero_ok):
        problems.append(f"{name}: a number from {0 if zero_ok else 'above 0'} to 1, e.g. 0.95 (got {value!r})")
        return default
    return float(number)


def trusted_proxies(value: Any, problems: list[str]) -> tuple[str, ...]:
    """Addresses or CIDR networks; from the environment, one string separated by commas or spaces."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"http.trusted_proxies: a list of IP addresses or CIDR networks (got {value!r})")
        return ()
    out = []
    for item in value:
        try:
            network = ipaddress.ip_network(item.strip(), strict=True)
            single = network.prefixlen == network.max_prefixlen
            out.append(str(network.network_address) if single else str(network))
        except ValueError:
            problems.append(
                f"http.trusted_proxies: {item!r} is not an IP address or a CIDR network such as 10.0.0.0/8"
                " (host bits must be zero)"
            )
    return tuple(dict.fromkeys(out))


def key_bits(value: object, alg_name: str, family: str, default: int, prefix: str, problems: list[str]) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{prefix}.key_size: must be a positive number of bits (got {value!r})")
        return default
    if family in ("EC", "OKP") and value != default:
        problems.append(f"{prefix}.key_size: {alg_name} keys are always {default} bits (got {value})")
        return default
    if value % 8:
        problems.append(f"{prefix}.key_size: must be a whole number of bytes (got {value} bits)")
    if value > 16384:
        problems.append(f"{prefix}.key_size: at most 16384 bits (got {value})")
    return value


# ----- [adoption] (API.md §6) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdoptionSettings:
    """Who holds which JWKS revision: records expire after `window` without a fetch; at most
    `max_fetchers` are kept (the oldest go first), and one source address names at most
    `max_per_source` fetchers (a stranger cannot crowd out the others)."""

    window: int = 86400
    max_fetchers: int = 10_000
    max_per_source: int = 64


def adoption_settings(table: Mapping[str, Any], problems: list[str]) -> AdoptionSettings:
    return AdoptionSettings(
        window=duration(table.get("window", "24h"), "adoption.window", problems),
        max_fetchers=whole_number(
            table.get("max_fetchers", 10_000), "adoption.max_fetchers", 1, 1_000_000, 10_000, problems
        ),
        max_per_source=whole_number(
            table.get("max_per_source", 64), "adoption.max_per_source", 1, 100_000, 64, problems
        ),
    )


# ----- [log] (API.md §7, issue: logs a fleet can ship) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = "text"  # "text" or "json" (one object per line)
    level: str = "info"
    access: bool = False  # an access log line per request (sampled)
    access_sample: float = 1.0  # the share of requests logged when `access` is on


def log_settings(table: Mapping[str, Any], problems: list[str]) -> LogSettings:
    fmt = text(table.get("format", "text"), "log.format", problems).strip().lower()
    if fmt and fmt not in LOG_FORMATS:
        problems.append(f"log.format: {' or '.join(LOG_FORMATS)} (got {fmt!r})")
    level = text(table.get("level", "info"), "log.level", problems).strip().lower()
    if level and level not in LOG_LEVELS:
        problems.append(f"log.level: one of {', '.join(LOG_LEVELS)} (got {level!r})")
    return LogSettings(
        format=fmt if fmt in LOG_FORMATS else "text",
        level=level if level in LOG_LEVELS else "info",
        access=flag(table.get("access", False), "log.access", problems),
        access_sample=fraction(table.get("access_sample", 1.0), "log.access_sample", 1.0, problems, zero_ok=False),
    )


# ----- [store] beyond the URL: TLS and the service's own Redis credentials (API.md §7) ------------


@dataclass(frozen=True, slots=True)
class RedisSettings:
    ca_file: str = ""  # rediss:// with a private CA
    password_file: str = ""  # re-read when Redis refuses the password
    vault_kv: str = ""  # "<KV v2 data path>#<field>", e.g. secret/data/jwks-redis#password
    vault_creds: str = ""  # dynamic credentials, e.g. database/creds/jwks-redis
    revocation_acks: int = 0  # Redis replicas that must acknowledge a revocation (WAIT) before 200

    @property
    def credential_source(self) -> str:
        """ "password_file", "vault_kv", "vault_creds" or "" (the URL's own password, if any)."""
        for name in ("password_file", "vault_kv", "vault_creds"):
            if getattr(self, name):
                return name
        return ""

    @property
    def kv_path_field(self) -> tuple[str, str]:
        path, _, field_name = self.vault_kv.partition("#")
        return path, field_name


def store_url_problems(url: str) -> list[str]:
    """What is wrong with a store URL (nothing: [])."""
    scheme = url.split(":", 1)[0]
    if scheme in ("redis", "rediss"):
        return [] if urlsplit(url).hostname else ["store.url: a redis URL needs a host, e.g. redis://127.0.0.1:6379/0"]
    if scheme == "unix":
        return []
    if scheme in ("redis+sentinel", "redis+cluster"):
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        if not hosts or not all(h.rpartition(":")[2].isdigit() for h in hosts.split(",")):
            return [f"store.url: {scheme}:// needs HOST:PORT[,HOST:PORT...], e.g. {scheme}://127.0.0.1:26379"]
        if scheme == "redis+sentinel" and not parts.path.strip("/").split("/")[0]:
            return [
                "store.url: redis+sentinel:// needs the service name, e.g. redis+sentinel://127.0.0.1:26379/mymaster/0"
            ]
        return []
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            return [f"store.url: must be sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH (got {url!r})"]
        return []
    return ["store.url: must be sqlite:///PATH, redis://HOST:PORT/DB, rediss://, redis+sentinel:// or redis+cluster://"]


def redis_settings(table: Mapping[str, Any], store_url: str, vault_addr: str, problems: list[str]) -> RedisSettings:
    out = RedisSettings(
        ca_file=text(table.get("ca_file", ""), "store.ca_file", problems).strip(),
        password_file=text(table.get("password_file", ""), "store.password_file", problems).strip(),
        vault_kv=text(table.get("vault_kv", ""), "store.vault_kv", problems).strip(),
        vault_creds=text(table.get("vault_creds", ""), "store.vault_creds", problems).strip().strip("/"),
        revocation_acks=whole_number(table.get("revocation_acks", 0), "store.revocation_acks", 0, 16, 0, problems),
    )
    given = [n for n in ("password_file", "vault_kv", "vault_creds") if getattr(out, n)]
    redis = store_url.split(":", 1)[0] in REDIS_SCHEMES
    for name in [*given, *(["ca_file"] if out.ca_file else []), *(["revocation_acks"] if out.revocation_acks else [])]:
        if not redis:
            problems.append(f"store.{name}: only for a Redis store (store.url is not redis)")
    if len(given) > 1:
        problems.append(f"store.{given[1]}: the Redis password comes from one source; also set: store.{given[0]}")
    userinfo = urlsplit(store_url).netloc.rpartition("@")[0] if redis else ""
    if given and ":" in userinfo:
        problems.append(f"store.url: has a password, but store.{given[0]} gives it; leave it out of the URL")
    elif userinfo and out.vault_creds:
        problems.append("store.url: names a user, but store.vault_creds gives both the username and the password")
    if out.vault_kv:
        path, field_name = out.kv_path_field
        if not _VAULT_PATH.fullmatch(path) or "/data/" not in f"/{path}" or not _KV_FIELD.fullmatch(field_name):
            problems.append(
                "store.vault_kv: a KV v2 data path and a field, e.g. secret/data/jwks-redis#password"
                f" (got {out.vault_kv!r})"
            )
    if out.vault_creds and not _VAULT_PATH.fullmatch(out.vault_creds):
        problems.append(f"store.vault_creds: a Vault path, e.g. database/creds/jwks-redis (got {out.vault_creds!r})")
    for name in ("vault_kv", "vault_creds"):
        if getattr(out, name) and not vault_addr:
            problems.append(
                f"vault.addr: store.{name} reads the Redis credentials from Vault; set vault.addr or VAULT_ADDR"
            )
    return out
