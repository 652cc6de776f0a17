"""Settings (API.md §1): durations, embedded defaults, TOML file, JWKS_ overrides and every refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import algorithms

from jwks_service.addresses import DEFAULT_ISSUER, DEFAULT_LISTEN, redact_url, split_listen, sqlite_path
from jwks_service.config import (
    DEFAULT_STORE_URL,
    build_settings,
    env_overrides,
    format_duration,
    load_settings,
    parse_duration,
)
from jwks_service.errors import ConfigError


def refusal(raw: dict[str, Any]) -> list[str]:
    """The lines of the ConfigError that build_settings raises for `raw`."""
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert info.value.error == "invalid_config"
    lines = info.value.description.split("\n")
    assert all(line.strip() for line in lines)
    return lines


def keyset(**table: Any) -> dict[str, Any]:
    return {"keysets": {"default": {"alg": "ES256", **table}}}


def only_line(raw: dict[str, Any], field: str) -> str:
    lines = refusal(raw)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{field}: "), lines[0]
    return lines[0]


# ----- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("90d", 90 * 86400),
        ("007s", 7),
        ("999999999s", 999_999_999),
    ],
)
def test_parse_duration_valid(text: str, seconds: int) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "s",
        "10",
        "1.5h",
        "-5m",
        "5 m",
        "5M",
        "5H",
        "1w",
        "1h30m",
        "10ms",
        "PT1H",
        "1e3s",
        "1000000000s",
        300,
        1.5,
        None,
    ],
)
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "keysets.default.token_ttl")
    assert info.value.description.startswith("keysets.default.token_ttl: must be a duration")
    assert repr(value) in info.value.description


@pytest.mark.parametrize("text", ["\u0661h", "\uff11\uff15m"])
def test_parse_duration_ascii_digits_only(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text, "x")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (30, "30s"), (60, "1m"), (1230, "1230s"), (3600, "1h")])
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, "x") == seconds


@given(st.integers(0, 10**6))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds), "x") == seconds


# ----- embedded defaults ----------------------------------------------------------------------


def test_embedded_defaults() -> None:
    s = build_settings({})
    assert s.store_url == DEFAULT_STORE_URL == "sqlite:///var/jwks.db"
    assert s.issuer == DEFAULT_ISSUER == "http://127.0.0.1:8000"
    assert s.listen == DEFAULT_LISTEN == "127.0.0.1:8000"
    assert s.embedded
    assert s.jwks_max_age == 300
    assert s.config_file == ""
    assert list(s.keysets) == ["default"]
    policy = s.keysets["default"]
    assert policy.name == "default"
    assert policy.alg == "ES256"
    assert policy.backend == "local"
    assert policy.prepublish == 3600
    assert policy.token_ttl == 900
    assert policy.leeway == 30
    assert policy.key_bits == 256
    assert policy.rotation_period >= policy.prepublish


def test_load_settings_without_file_or_environment_is_embedded() -> None:
    assert load_settings(None, environ={}) == build_settings({})


def test_default_rotation_hmac_shorter_than_asymmetric() -> None:
    s = build_settings({"keysets": {"h": {"alg": "HS256"}, "e": {"alg": "EdDSA"}}})
    assert s.keysets["h"].rotation_period == 90 * 86400
    assert s.keysets["e"].rotation_period == 180 * 86400
    assert s.keysets["h"].key_bits == 256


def test_derived_verify_window() -> None:
    s = build_settings({"jwks": {"max_age": "10m"}, **keyset(token_ttl="1h", leeway="45s")})
    assert s.keysets["default"].verify_window == 3600 + 45 + 600
    assert build_settings({}).keysets["default"].verify_window == 900 + 30 + 300


def test_verify_window_may_only_lengthen() -> None:
    s = build_settings(keyset(verify_window="2h"))
    assert s.keysets["default"].verify_window == 7200
    # exactly the derived window is accepted too
    assert build_settings(keyset(verify_window="1230s")).keysets["default"].verify_window == 1230
    line = only_line(keyset(verify_window="10m"), "keysets.default.verify_window")
    assert "1230s" in line
    assert "10m" in line


def test_stale_if_error() -> None:
    assert build_settings({}).stale_if_error == 3600 - 300 - 30
    s = build_settings(
        {
            "jwks": {"max_age": "1m"},
            "keysets": {"a": {"prepublish": "2h", "leeway": "10s"}, "b": {"prepublish": "10m", "leeway": "0s"}},
        }
    )
    assert s.stale_if_error == min(7200 - 60 - 10, 600 - 60 - 0)
    assert build_settings({"jwks": {"max_age": "5m"}, **keyset(prepublish="330s", leeway="30s")}).stale_if_error == 0


def test_url_joins_issuer() -> None:
    assert build_settings({"issuer": "https://auth.example.com/"}).url("/oauth/token") == (
        "https://auth.example.com/oauth/token"
    )


def test_split_listen_and_sqlite_path() -> None:
    assert split_listen("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_listen("[::1]:9000") == ("::1", 9000)
    assert str(sqlite_path("sqlite:///var/jwks.db")) == "var/jwks.db"
    assert str(sqlite_path("sqlite:////srv/jwks.db")) == "/srv/jwks.db"


# ----- environment ----------------------------------------------------------------------------


def test_env_overrides_tree() -> None:
    env = {
        "JWKS_STORE__URL": "sqlite:////tmp/x.db",
        "JWKS_KEYSETS__DEFAULT__ALG": "RS256",
        "JWKS_ISSUER": "https://a.example",
        "JWKS_CONFIG": "/etc/jwks.toml",
        "JWKS_STORE____URL": "ignored (empty path part)",
        "PATH": "/usr/bin",
    }
    assert env_overrides(env) == {
        "store": {"url": "sqlite:////tmp/x.db"},
        "keysets": {"default": {"alg": "RS256"}},
        "issuer": "https://a.example",
    }


def test_env_overrides_embedded_defaults() -> None:
    s = load_settings(
        None,
        environ={
            "JWKS_STORE__URL": "sqlite:////srv/jwks.db",
            "JWKS_KEYSETS__DEFAULT__ALG": "RS256",
            "JWKS_KEYSETS__DEFAULT__KEY_SIZE": "3072",
            "JWKS_KEYSETS__DEFAULT__TOKEN_TTL": "5m",
            "JWKS_ISSUER": "https://auth.example.com",
            "JWKS_JWKS__MAX_AGE": "1m",
            "JWKS_LISTEN": "0.0.0.0:9000",
            "HOME": "/root",
        },
    )
    assert s.store_url == "sqlite:////srv/jwks.db"
    assert s.issuer == "https://auth.example.com"
    assert s.listen == "0.0.0.0:9000"
    assert s.jwks_max_age == 60
    policy = s.keysets["default"]
    assert policy.alg == "RS256"
    assert policy.key_bits == 3072
    assert policy.token_ttl == 300
    assert policy.verify_window == 300 + 30 + 60


def test_unrelated_jwks_variables_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """JWKS_URL set for another program in the same container once stopped the service ("unknown
    setting"); variables without the shape of a setting are now left out, named in one warning line."""
    env = {
        "JWKS_URL": "https://idp.example/.well-known/jwks.json",  # another program's
        "JWKS_CACHE_TTL": "300",
        "JWKS_STORE": "not a table",
        "JWKS_ISSUER__X": "wrong depth",
        "JWKS_KEYSETS__DEFAULT": "no key",
        "JWKS_ISSUER": "https://auth.example.com",  # ours, still applied
        "JWKS_JWKS__MAX_AGE": "1m",
        "JWKS_KEYSETS__DEFAULT__TOKEN_TTL": "5m",
    }
    with caplog.at_level("WARNING", logger="jwks_service.config"):
        s = load_settings(None, environ=env)
    assert s.issuer == "https://auth.example.com" and s.jwks_max_age == 60
    assert s.keysets["default"].token_ttl == 300
    warnings = [r.getMessage() for r in caplog.records if r.name == "jwks_service.config"]
    assert len(warnings) == 1
    for name in ("JWKS_CACHE_TTL", "JWKS_ISSUER__X", "JWKS_KEYSETS__DEFAULT", "JWKS_STORE", "JWKS_URL"):
        assert name in warnings[0]
    assert "idp.example" not in warnings[0]  # names only: a value may be a secret
    assert "JWKS_JWKS__MAX_AGE" not in warnings[0]


def test_no_warning_without_unrelated_variables(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="jwks_service.config"):
        load_settings(None, environ={"JWKS_ISSUER": "https://auth.example.com", "JWKS_CONFIG": "", "PATH": "/bin"})
    assert not caplog.records


def test_audit_retention() -> None:
    assert build_settings({}).audit_retention == 400 * 86400  # API.md §8 default
    assert build_settings({"audit": {"retention": "90d"}}).audit_retention == 90 * 86400
    assert load_settings(None, environ={"JWKS_AUDIT__RETENTION": "2d"}).audit_retention == 2 * 86400
    assert "at least 1d" in only_line({"audit": {"retention": "12h"}}, "audit.retention")
    assert "must be a duration" in only_line({"audit": {"retention": "forever"}}, "audit.retention")
    assert "unknown setting" in only_line({"audit": {"sink": "x"}}, "audit.sink")


def test_audit_sinks() -> None:
    assert (build_settings({}).audit_file, build_settings({}).audit_syslog) == ("", False)  # none by default
    settings = build_settings({"audit": {"file": "/var/log/jwks/audit.jsonl", "syslog": True}})
    assert (settings.audit_file, settings.audit_syslog) == ("/var/log/jwks/audit.jsonl", True)
    from_env = load_settings(None, environ={"JWKS_AUDIT__SYSLOG": "true", "JWKS_AUDIT__FILE": "/srv/a.jsonl"})
    assert (from_env.audit_file, from_env.audit_syslog) == ("/srv/a.jsonl", True)
    assert "true or false" in only_line({"audit": {"syslog": "yes"}}, "audit.syslog")
    assert "a file name" in only_line({"audit": {"file": 1}}, "audit.file")


def test_env_override_refusal_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"JWKS_KEYSETS__DEFAULT__ALG": "none"})
    assert info.value.description.startswith("keysets.default.alg: unknown algorithm 'none'")


TOML = """
issuer = "https://auth.example.com"
listen = "127.0.0.1:9100"

[store]
url = "sqlite:///data/jwks.db"

[jwks]
max_age = "2m"

[keysets.default]
alg = "ES256"
rotation_period = "90d"
prepublish = "1h"
token_ttl = "15m"
leeway = "30s"

[keysets.internal]
alg = "HS512"
rotation_period = "30d"
prepublish = "10m"
token_ttl = "5m"
leeway = "0s"
"""


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.toml"
    path.write_text(TOML, encoding="utf-8")
    s = load_settings(str(path), environ={})
    assert s.config_file == str(path)
    assert s.issuer == "https://auth.example.com"
    assert s.listen == "127.0.0.1:9100"
    assert s.store_url == "sqlite:///data/jwks.db"
    assert s.jwks_max_age == 120
    assert list(s.keysets) == ["default", "internal"]
    d, h = s.keysets["default"], s.keysets["internal"]
    assert (d.alg, d.rotation_period, d.prepublish, d.token_ttl, d.leeway) == ("ES256", 90 * 86400, 3600, 900, 30)
    assert d.verify_window == 900 + 30 + 120
    assert (h.alg, h.key_bits, h.verify_window) == ("HS512", 512, 300 + 0 + 120)


def test_toml_file_named_by_jwks_config_and_env_wins(tmp_path: Path) -> None:
    path = tmp_path / "jwks.toml"
    path.write_text(TOML, encoding="utf-8")
    s = load_settings(
        None,
        environ={
            "JWKS_CONFIG": str(path),
            "JWKS_ISSUER": "https://other.example.com",
            "JWKS_KEYSETS__DEFAULT__TOKEN_TTL": "10m",
        },
    )
    assert s.config_file == str(path)
    assert s.issuer == "https://other.example.com"
    assert s.keysets["default"].token_ttl == 600
    # the rest of the file's keyset is kept (merge, not replace)
    assert s.keysets["default"].rotation_period == 90 * 86400
    assert s.keysets["internal"].alg == "HS512"


def test_config_argument_wins_over_jwks_config(tmp_path: Path) -> None:
    path = tmp_path / "jwks.toml"
    path.write_text(TOML, encoding="utf-8")
    s = load_settings(str(path), environ={"JWKS_CONFIG": str(tmp_path / "missing.toml")})
    assert s.issuer == "https://auth.example.com"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: file .*missing\.toml does not exist$"):
        load_settings(str(tmp_path / "missing.toml"), environ={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("issuer = \n[[[", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^config: .*bad\.toml is not valid TOML"):
        load_settings(str(path), environ={})


def test_invalid_file_in_toml_names_field(tmp_path: Path) -> None:
    path = tmp_path / "jwks.toml"
    path.write_text('[keysets.default]\nalg = "HS256"\nkey_size = 128\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(str(path), environ={})
    assert info.value.description == "keysets.default.key_size: an HS256 key needs at least 256 bits (got 128)"


# ----- refusals: one line naming the field ----------------------------------------------------


def test_prepublish_shorter_than_max_age_plus_leeway() -> None:
    # 5m + 30s = 330s: 329s is refused, 330s accepted
    line = only_line({"jwks": {"max_age": "5m"}, **keyset(prepublish="329s")}, "keysets.default.prepublish")
    assert "jwks.max_age + leeway" in line
    assert "330s" in line
    assert build_settings({"jwks": {"max_age": "5m"}, **keyset(prepublish="330s")}).keysets["default"].prepublish == 330
    # leeway counts too
    only_line(keyset(prepublish="10m", leeway="301s"), "keysets.default.prepublish")


@pytest.mark.parametrize(
    ("alg", "bits", "needed"),
    [("HS256", 128, 256), ("HS256", 248, 256), ("HS384", 256, 384), ("HS512", 256, 512), ("HS512", 384, 512)],
)
def test_hmac_key_too_short(alg: str, bits: int, needed: int) -> None:
    line = only_line(keyset(alg=alg, key_size=bits), "keysets.default.key_size")
    assert f"at least {needed} bits" in line
    assert f"got {bits}" in line


@pytest.mark.parametrize(("alg", "bits"), [("HS256", 256), ("HS256", 512), ("HS384", 384), ("HS512", 512)])
def test_hmac_key_long_enough(alg: str, bits: int) -> None:
    assert build_settings(keyset(alg=alg, key_size=bits)).keysets["default"].key_bits == bits


@pytest.mark.parametrize("alg", algorithms("RSA", "RSA-PSS"))
def test_rsa_key_too_short(alg: str) -> None:
    line = only_line(keyset(alg=alg, key_size=1024), "keysets.default.key_size")
    assert "2048" in line
    only_line(keyset(alg=alg, key_size=2040), "keysets.default.key_size")
    assert build_settings(keyset(alg=alg, key_size=2048)).keysets["default"].key_bits == 2048


@pytest.mark.parametrize(
    ("alg", "bits"),
    [("RS256", 2048), ("RS384", 3072), ("RS512", 4096), ("ES256", 256), ("ES384", 384), ("ES512", 521), ("EdDSA", 256)],
)
def test_default_key_sizes(alg: str, bits: int) -> None:
    assert build_settings(keyset(alg=alg)).keysets["default"].key_bits == bits


@pytest.mark.parametrize(
    ("key_size", "fragment"),
    [(0, "positive"), (-8, "positive"), (True, "positive"), ("big", "positive"), (2049, "whole number of bytes")],
)
def test_bad_key_size(key_size: object, fragment: str) -> None:
    assert fragment in only_line(keyset(alg="RS256", key_size=key_size), "keysets.default.key_size")


def test_ec_key_size_is_fixed() -> None:
    assert "always 256 bits" in only_line(keyset(alg="ES256", key_size=384), "keysets.default.key_size")


@pytest.mark.parametrize("alg", ["none", "HS1", "RS1", "es256", "ES256K", ""])
def test_unknown_alg(alg: str) -> None:
    line = only_line(keyset(alg=alg), "keysets.default.alg")
    assert "unknown algorithm" in line


@pytest.mark.parametrize("alg", algorithms())
def test_every_documented_alg_accepted(alg: str) -> None:
    assert build_settings(keyset(alg=alg)).keysets["default"].alg == alg


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"issuers": "https://x"}, "issuers"),
        ({"store": {"path": "x"}}, "store.path"),
        ({"jwks": {"maxage": "5m"}}, "jwks.maxage"),
        ({"secrets": {"kek_path": "x"}}, "secrets.kek_path"),
        ({"vault": {"token": "x"}}, "vault.token"),
        (keyset(ttl="5m"), "keysets.default.ttl"),
    ],
)
def test_unknown_setting(raw: dict[str, Any], field: str) -> None:
    assert "unknown setting" in only_line(raw, field)


def test_unknown_env_setting_refused() -> None:
    with pytest.raises(ConfigError, match=r"^keysets\.default\.tokenttl: unknown setting"):
        load_settings(None, environ={"JWKS_KEYSETS__DEFAULT__TOKENTTL": "5m"})


@pytest.mark.parametrize("field", ["rotation_period", "prepublish", "token_ttl", "leeway", "verify_window"])
@pytest.mark.parametrize("value", ["soon", "5", "1.5h", 300])
def test_bad_keyset_duration(field: str, value: object) -> None:
    assert "must be a duration" in only_line(keyset(**{field: value}), f"keysets.default.{field}")


def test_bad_max_age() -> None:
    assert "must be a duration" in only_line({"jwks": {"max_age": "5 minutes"}}, "jwks.max_age")
    assert "longer than 0s" in only_line({"jwks": {"max_age": "0s"}}, "jwks.max_age")


@pytest.mark.parametrize("field", ["rotation_period", "prepublish", "token_ttl", "verify_window"])
def test_zero_durations_refused(field: str) -> None:
    assert "longer than 0s" in only_line(keyset(**{field: "0s"}), f"keysets.default.{field}")


def test_zero_leeway_allowed() -> None:
    assert build_settings(keyset(leeway="0s")).keysets["default"].leeway == 0


def test_rotation_period_shorter_than_prepublish() -> None:
    line = only_line(keyset(rotation_period="30m", prepublish="1h"), "keysets.default.rotation_period")
    assert "prepublish" in line
    only_line(keyset(rotation_period="3599s", prepublish="1h"), "keysets.default.rotation_period")
    assert build_settings(keyset(rotation_period="1h", prepublish="1h")).keysets["default"].rotation_period == 3600


@pytest.mark.parametrize(
    "issuer",
    ["ftp://auth.example.com", "auth.example.com", "https://", "https://a.example/?x=1", "https://a.example/#f"],
)
def test_bad_issuer(issuer: str) -> None:
    assert "http(s) URL" in only_line({"issuer": issuer}, "issuer")


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("JWKS_ISSUER", "issuer"),
        ("JWKS_LISTEN", "listen"),
        ("JWKS_STORE__URL", "store.url"),
        ("JWKS_SECRETS__KEK_FILE", "secrets.kek_file"),
    ],
)
def test_empty_value_refused(variable: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={variable: ""})
    assert info.value.description.startswith(f"{field}: ")


@pytest.mark.parametrize("issuer", ["http://localhost:8000", "https://auth.example.com", "https://a.example/tenant"])
def test_good_issuer(issuer: str) -> None:
    assert build_settings({"issuer": issuer}).issuer == issuer


@pytest.mark.parametrize("listen", ["8000", ":8000", "host:", "host:0", "host:65536", "host:http", "host:-1"])
def test_bad_listen(listen: str) -> None:
    assert "HOST:PORT" in only_line({"listen": listen}, "listen")


@pytest.mark.parametrize("listen", ["0.0.0.0:1", "localhost:65535", "[::1]:8000"])
def test_good_listen(listen: str) -> None:
    assert build_settings({"listen": listen}).listen == listen


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"store": {"url": "postgres://db/jwks"}}, "store.url"),
        ({"store": {"url": "redis:///0"}}, "store.url"),
        ({"store": {"url": "sqlite:jwks.db"}}, "store.url"),
        ({"issuer": 42}, "issuer"),
        ({"store": "sqlite:///x.db"}, "store"),
        ({"keysets": {}}, "keysets"),
        ({"keysets": {"Bad Name": {"alg": "ES256"}}}, "keysets.Bad Name"),
        ({"keysets": {"default": "ES256"}}, "keysets.default"),
        (keyset(backend="hsm"), "keysets.default.backend"),
    ],
)
def test_other_refusals(raw: dict[str, Any], field: str) -> None:
    only_line(raw, field)


def test_keyset_name_with_trailing_newline_refused() -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"keysets": {"abc\n": {"alg": "ES256"}}})
    assert "keyset names are" in info.value.description


def test_listen_port_ascii_digits_only() -> None:
    only_line({"listen": "127.0.0.1:\uff18\uff10"}, "listen")


def test_multiple_problems_make_multiple_lines() -> None:
    raw = {
        "issuer": "ftp://x",
        "listen": "nowhere",
        "colour": "blue",
        "jwks": {"max_age": "5m"},
        "keysets": {
            "a": {"alg": "HS256", "key_size": 128, "prepublish": "1m", "token_ttl": "soon"},
            "b": {"alg": "RS256", "key_size": 1024, "rotation_period": "1m", "prepublish": "1h"},
            "c": {"alg": "XS256"},
        },
    }
    lines = refusal(raw)
    fields = sorted(line.split(": ", 1)[0] for line in lines)
    assert fields == sorted(
        [
            "colour",
            "issuer",
            "listen",
            "keysets.a.token_ttl",
            "keysets.a.prepublish",
            "keysets.a.key_size",
            "keysets.b.rotation_period",
            "keysets.b.key_size",
            "keysets.c.alg",
        ]
    )


# ----- properties -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    max_age=st.integers(1, 7200),
    leeway=st.integers(0, 600),
    prepublish=st.integers(1, 20000),
    rotation=st.integers(1, 40000),
    token_ttl=st.integers(1, 86400),
)
def test_consistency_rules(max_age: int, leeway: int, prepublish: int, rotation: int, token_ttl: int) -> None:
    raw = {
        "jwks": {"max_age": f"{max_age}s"},
        **keyset(
            rotation_period=f"{rotation}s", prepublish=f"{prepublish}s", token_ttl=f"{token_ttl}s", leeway=f"{leeway}s"
        ),
    }
    expected = set()
    if prepublish < max_age + leeway:
        expected.add("keysets.default.prepublish")
    if rotation < prepublish:
        expected.add("keysets.default.rotation_period")
    if not expected:
        s = build_settings(raw)
        policy = s.keysets["default"]
        assert policy.verify_window == token_ttl + leeway + max_age
        assert (policy.rotation_period, policy.prepublish, policy.token_ttl, policy.leeway) == (
            rotation,
            prepublish,
            token_ttl,
            leeway,
        )
        assert s.stale_if_error == prepublish - max_age - leeway >= 0
    else:
        lines = refusal(raw)
        assert {line.split(": ", 1)[0] for line in lines} == expected
        assert len(lines) == len(expected)


def test_redis_store_url_is_accepted_and_never_displayed_with_its_password() -> None:
    settings = build_settings({"store": {"url": "redis://:s3cret@127.0.0.1:6379/0"}})
    assert not settings.embedded
    assert settings.store_display == "redis://:***@127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as info:
        build_settings({"store": {"url": "mysql://u:s3cret@db/x"}})
    assert "s3cret" not in info.value.description


def test_a_password_in_the_store_urls_query_is_never_displayed() -> None:
    # redis-py takes the password from the query string too (redis://host/0?password=...).
    settings = build_settings({"store": {"url": "redis://127.0.0.1:6379/0?password=s3cret&ssl_cert_reqs=none"}})
    assert settings.store_display == "redis://127.0.0.1:6379/0?password=***&ssl_cert_reqs=none"
    assert redact_url("rediss://u:one@h:1/0?Password=two") == "rediss://u:***@h:1/0?Password=***"


# ----- Vault: login and envelope mode ---------------------------------------------------------

VAULT = {"addr": "http://127.0.0.1:8200"}


def test_vault_login_settings() -> None:
    s = build_settings({"vault": {**VAULT, "token_file": "/run/secrets/vault-token"}})
    assert (s.vault.token_file, s.vault.role_id, s.vault.auth_mount) == ("/run/secrets/vault-token", "", "approle")
    assert not s.vault.approle and not s.uses_vault
    s = build_settings(
        {"vault": {**VAULT, "role_id": "r-1", "secret_id_file": "/run/secrets/sid", "auth_mount": "/apps/approle/"}}
    )
    assert s.vault.approle and (s.vault.secret_id_file, s.vault.auth_mount) == ("/run/secrets/sid", "apps/approle")


def test_vault_role_id_from_the_environment_needs_a_secret_id_source() -> None:
    env = {"VAULT_ADDR": VAULT["addr"], "VAULT_ROLE_ID": "r-1"}
    with pytest.raises(ConfigError, match=r"^vault\.secret_id_file: vault\.role_id is set; give vault\.secret_id_file"):
        load_settings(None, environ=env)
    assert load_settings(None, environ={**env, "VAULT_SECRET_ID": "s"}).vault.role_id == "r-1"
    # The configuration wins over VAULT_ROLE_ID; the secret_id itself never enters the settings.
    s = load_settings(None, environ={**env, "VAULT_SECRET_ID": "s", "JWKS_VAULT__ROLE_ID": "r-2"})
    assert s.vault.role_id == "r-2" and "'s'" not in repr(s)


@pytest.mark.parametrize(
    ("vault", "field", "fragment"),
    [
        ({"role_id": "r", "token_file": "t", "secret_id_file": "s"}, "vault.role_id", "not both"),
        ({"secret_id_file": "s"}, "vault.secret_id_file", "needs vault.role_id"),
        ({"role_id": "r", "secret_id_file": "s", "auth_mount": "../sys"}, "vault.auth_mount", "auth method mount"),
        ({"role_id": 7, "secret_id_file": "s"}, "vault.role_id", "must be a string"),
    ],
)
def test_vault_login_refusals(vault: dict[str, Any], field: str, fragment: str) -> None:
    assert fragment in only_line({"vault": {**VAULT, **vault}}, field)


def test_envelope_mode_settings() -> None:
    s = build_settings({"vault": VAULT, "secrets": {"kek": "vault-transit:jwks-kek", "kek_file": "/srv/kek.wrapped"}})
    assert (s.kek_transit_key, s.kek_file, s.uses_vault) == ("jwks-kek", "/srv/kek.wrapped", True)
    assert build_settings({}).kek_transit_key == ""


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({"vault": VAULT, "secrets": {"kek": "vault-transit:"}}, "secrets.kek", "vault-transit:<Transit key name>"),
        ({"vault": VAULT, "secrets": {"kek": "vault-transit:a/b"}}, "secrets.kek", "vault-transit:<Transit key name>"),
        ({"vault": VAULT, "secrets": {"kek": "awskms:alias/x"}}, "secrets.kek", "vault-transit:<Transit key name>"),
        ({"secrets": {"kek": "vault-transit:jwks-kek"}}, "vault.addr", "set vault.addr or VAULT_ADDR"),
        (
            {"vault": VAULT, "secrets": {"kek": "vault-transit:jwks-kek"}, "keysets": {"kek": {"backend": "vault"}}},
            "secrets.kek",
            "also the signing key of keysets.kek",
        ),
    ],
)
def test_envelope_mode_refusals(raw: dict[str, Any], field: str, fragment: str) -> None:
    assert fragment in only_line(raw, field)


def test_vault_max_batch() -> None:
    assert build_settings({"vault": VAULT}).vault.max_batch == 256
    assert build_settings({"vault": {**VAULT, "max_batch": 1}}).vault.max_batch == 1
    assert load_settings(None, environ={"JWKS_VAULT__MAX_BATCH": "64"}).vault.max_batch == 64
    for bad in (0, 1001, "many", True, 2.5):
        assert "whole number from 1 to 1000" in only_line({"vault": {**VAULT, "max_batch": bad}}, "vault.max_batch")


@pytest.mark.parametrize(
    ("alg", "bits", "line"),
    [
        ("RS256", 8192, "keysets.v.key_size: Vault Transit RSA keys are 2048, 3072 or 4096 bits, not 8192"),
        ("PS384", 2560, "keysets.v.key_size: Vault Transit RSA keys are 2048, 3072 or 4096 bits, not 2560"),
        (
            "HS256",
            8192,
            "keysets.v.key_size: a Vault Transit HS256 key is a whole number of bytes from 256 to 4096 bits, not 8192",
        ),
    ],
)
def test_vault_keysets_take_only_the_key_sizes_transit_makes(alg: str, bits: int, line: str) -> None:
    assert refusal({"vault": VAULT, "keysets": {"v": {"alg": alg, "backend": "vault", "key_size": bits}}}) == [line]
    local = build_settings({"keysets": {"v": {"alg": alg, "key_size": bits}}})
    assert local.keysets["v"].key_bits == bits  # the local backend makes any of these


# Libraries that do I/O: none of them is needed to read and check the settings.
IO_LIBRARIES = ("hvac", "requests", "redis", "httpx", "httpcore", "aiohttp", "starlette", "uvicorn", "anyio")

PURE_CONFIG_SCRIPT = r"""
import json
import sys

from jwks_service.config import build_settings
from jwks_service.errors import ConfigError

vault = {"addr": "http://127.0.0.1:8200"}
keysets = {
    "rsa": {"alg": "RS256", "backend": "vault", "key_size": 3072},
    "mac": {"alg": "HS512", "backend": "vault", "key_size": 512},
    "ec": {"alg": "ES256", "backend": "vault"},
}
build_settings({"vault": vault, "keysets": keysets})
try:
    build_settings({"vault": vault, "keysets": {"big": {"alg": "RS256", "backend": "vault", "key_size": 8192}}})
except ConfigError:
    pass
else:
    raise SystemExit("a size Transit cannot make was accepted")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))))
"""


def test_parsing_the_configuration_loads_no_io_library() -> None:
    """Settings are checked (Vault keysets and their key sizes included) without loading hvac, requests,
    redis or any other client library: configuration parsing is pure."""
    done = subprocess.run(
        [sys.executable, "-c", PURE_CONFIG_SCRIPT, ",".join(IO_LIBRARIES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_https_and_admin_listener_settings_from_the_file_and_the_environment() -> None:
    plain = build_settings({})
    assert (plain.tls, plain.tls_cert, plain.tls_key, plain.admin_listen) == (False, "", "", "")
    s = load_settings(
        None,
        environ={
            "JWKS_HTTP__TLS_CERT": "/etc/jwks/tls.crt",
            "JWKS_HTTP__TLS_KEY": "/etc/jwks/tls.key",
            "JWKS_HTTP__ADMIN_LISTEN": "127.0.0.1:8001",
        },
    )
    assert (s.tls, s.tls_cert, s.tls_key, s.admin_listen) == (
        True,
        "/etc/jwks/tls.crt",
        "/etc/jwks/tls.key",
        "127.0.0.1:8001",
    )
    # The embedded default issuer takes the scheme served; a configured issuer is never changed.
    assert s.issuer == "https://" + DEFAULT_ISSUER.split("://", 1)[1]
    assert s.url("/oauth/token").startswith("https://")
    tls = {"tls_cert": "a.crt", "tls_key": "a.key"}
    assert build_settings({"issuer": "http://proxy.example", "http": tls}).issuer == "http://proxy.example"


@pytest.mark.parametrize(
    ("http", "problem"),
    [
        ({"tls_cert": "a.crt"}, "http.tls_key: http.tls_cert is set; HTTPS needs both the certificate and its key"),
        ({"tls_key": "a.key"}, "http.tls_cert: http.tls_key is set; HTTPS needs both the certificate and its key"),
        ({"tls_cert": 1, "tls_key": "a.key"}, "http.tls_cert: must be a string"),
        ({"admin_listen": "8001"}, "http.admin_listen: must be HOST:PORT with a port from 1 to 65535 (got '8001')"),
        ({"admin_listen": "0.0.0.0:8000"}, "http.admin_listen: must use another port than listen (127.0.0.1:8000)"),
        ({"tls_ca": "x"}, "http.tls_ca: unknown setting (known: admin_listen, tls_cert, tls_key, trusted_proxies)"),
    ],
)
def test_https_and_admin_listener_settings_are_validated(http: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"http": http})
    assert problem in info.value.description.splitlines()
