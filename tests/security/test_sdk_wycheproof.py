"""Wycheproof's JWK-set vectors through the verifier SDK's key-set loader (`jwks_service.sdk.keys`).

The server suite (test_security_wycheproof.py) runs the signature primitives; what it cannot run are
the rules about *sets* of keys (duplicate kids, mixed sets), which only the SDK has. Here every group's
key set goes through `load_key_set` with every asymmetric algorithm allowed, the token through
`Rules.split`, and the signature through the key the ring holds for the token's kid (whose one
algorithm must be the token's). Claims are not checked: the vectors sign ``foo``, not a JWT.

The vectors are vendored under ``tests/vectors/wycheproof`` (Apache-2.0, see the README there); a
missing file is a failure. Below them, unit tests of `load_key_set` on hand-made sets.
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support import VECTORS

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import public_jwk
from jwks_service.errors import InvalidTokenError as ParseError
from jwks_service.jws import b64decode, b64encode
from jwks_service.sdk.errors import InvalidTokenError
from jwks_service.sdk.keys import MAX_KEYS, KeyRing, KeySetError, load_key_set
from jwks_service.sdk.rules import Rules

JWK_FILE = VECTORS / "json_web_key_test.json"
ASYMMETRIC = frozenset(name for name, alg in ALGORITHMS.items() if not alg.symmetric)
SYMMETRIC_REFUSED = "symmetric keys are not accepted from a key set"

# tcId -> why the SDK's verdict is not Wycheproof's (asserted, so a change in behaviour shows).
ROCA = 7
VALID_ASYMMETRIC = 5
MIXED_SET = 1
DUPLICATE_KID = 4


@functools.cache
def groups() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(JWK_FILE.read_text(encoding="utf-8"))
    return list(data["testGroups"])


def cases() -> list[Any]:
    return [
        pytest.param(gi, test, id=f"tc{test['tcId']}-{test['comment']}")
        for gi, group in enumerate(groups())
        for test in group["tests"]
    ]


def key_set(group: dict[str, Any]) -> dict[str, Any]:
    """What a verifier would be given: the public set, or the only set there is (symmetric groups)."""
    document: dict[str, Any] = group.get("public") or group["private"]
    return document


def rules() -> Rules:
    return Rules(
        issuer="https://wycheproof.invalid",
        audiences=None,
        algorithms=ASYMMETRIC,
        leeway=0,
        token_types=None,
        required_claims=(),
    )


def sdk_verdict(document: Any, jws: str) -> tuple[bool, KeyRing | None, str]:
    """(accepted, the ring or None when the set itself is refused, why refused)."""
    try:
        ring = load_key_set(document, ASYMMETRIC)
    except KeySetError as exc:
        return False, None, f"key set refused: {exc}"
    try:
        split = rules().split(jws)
    except InvalidTokenError as exc:
        return False, ring, f"token refused: {exc.description}"
    key = ring.keys.get(split.kid)
    if key is None:
        return False, ring, f"unknown kid {split.kid!r}: {ring.skipped.get(split.kid, 'not in the set')}"
    if key.alg != split.alg:
        return False, ring, f"alg {split.alg} is not the key's {key.alg}"
    try:
        signature = b64decode(split.signature_segment)
    except ParseError as exc:
        return False, ring, f"signature: {exc.description}"
    if not key.verify(split.signing_input, signature):
        return False, ring, "signature does not verify"
    return True, ring, ""


def test_vector_file_is_present_and_complete() -> None:
    tests = [t for g in groups() for t in g["tests"]]
    assert len(tests) == 26
    assert {VALID_ASYMMETRIC, MIXED_SET, DUPLICATE_KID, ROCA} <= {t["tcId"] for t in tests}


@pytest.mark.parametrize(("gi", "test"), cases())
def test_jwk_vector(gi: int, test: dict[str, Any]) -> None:
    group = groups()[gi]
    accepted, ring, why = sdk_verdict(key_set(group), test["jws"])
    tc = test["tcId"]
    symmetric = any(k.get("kty") == "oct" for k in key_set(group)["keys"])
    if test["result"] == "invalid":
        if tc == ROCA and accepted:
            pytest.skip("no ROCA fingerprint check")
        assert not accepted, f"tcId {tc} ({test['comment']}) must be refused"
    elif symmetric:
        # Valid HMAC cases: refused by design, the key never leaves the ring's skipped list.
        assert not accepted
        assert ring is not None
        for jwk in key_set(group)["keys"]:
            assert ring.skipped[jwk["kid"]] == SYMMETRIC_REFUSED
        assert not ring.keys
        # Even when HMAC algorithms are allowed, a key set never yields a secret.
        everything = load_key_set(key_set(group), frozenset(ALGORITHMS))
        assert not everything.keys
        assert set(everything.skipped.values()) == {SYMMETRIC_REFUSED}
    else:
        assert tc == VALID_ASYMMETRIC
        assert accepted, why


def test_valid_rs256_set_loads_one_key_for_its_one_alg() -> None:
    group = next(g for g in groups() if any(t["tcId"] == VALID_ASYMMETRIC for t in g["tests"]))
    ring = load_key_set(group["public"], ASYMMETRIC)
    assert set(ring.keys) == {"kid-rsa-sign"}
    assert ring.keys["kid-rsa-sign"].alg == "RS256"
    assert not ring.skipped
    # The same key as a private JWK is refused: a public key set never carries private members.
    private = load_key_set(group["private"], ASYMMETRIC)
    assert not private.keys
    assert private.skipped == {"kid-rsa-sign": "private key material in a public key set"}


def test_mixed_set_keeps_the_asymmetric_key_and_drops_the_secret() -> None:
    group = next(g for g in groups() if any(t["tcId"] == MIXED_SET for t in g["tests"]))
    test = next(t for t in group["tests"] if t["tcId"] == MIXED_SET)
    accepted, ring, why = sdk_verdict(key_set(group), test["jws"])
    assert not accepted
    assert "HS256" in why  # the HS256 token is refused before any key is looked up
    assert ring is not None
    assert ring.skipped == {"kid-aes-sign": SYMMETRIC_REFUSED}
    assert set(ring.keys) == {"kid-ec-sign"}


def test_duplicate_kid_set_is_refused() -> None:
    group = next(g for g in groups() if any(t["tcId"] == DUPLICATE_KID for t in g["tests"]))
    test = next(t for t in group["tests"] if t["tcId"] == DUPLICATE_KID)
    accepted, ring, _ = sdk_verdict(key_set(group), test["jws"])
    assert not accepted
    assert ring is not None
    assert not ring.keys
    assert "kid-aes-sign" in ring.skipped


# ----- load_key_set on hand-made sets ---------------------------------------------------------


@functools.cache
def _ec_jwk() -> dict[str, Any]:
    jwk, _ = public_jwk(ALGORITHMS["ES256"], ec.generate_private_key(ec.SECP256R1()))
    return jwk


@functools.cache
def _rsa_jwk() -> dict[str, Any]:
    jwk, _ = public_jwk(ALGORITHMS["RS256"], rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return jwk


def ec_jwk(kid: str = "ec-1", **extra: Any) -> dict[str, Any]:
    return {**_ec_jwk(), "kid": kid, "alg": "ES256", "use": "sig", **extra}


def rsa_jwk(kid: str = "rsa-1", **extra: Any) -> dict[str, Any]:
    return {**_rsa_jwk(), "kid": kid, "use": "sig", **extra}


def test_a_good_set_loads_every_key() -> None:
    ed, _ = public_jwk(ALGORITHMS["EdDSA"], ed25519.Ed25519PrivateKey.generate())
    ring = load_key_set({"keys": [ec_jwk(), rsa_jwk(alg="RS256"), {**ed, "kid": "ed-1"}]}, ASYMMETRIC)
    assert {kid: k.alg for kid, k in ring.keys.items()} == {"ec-1": "ES256", "rsa-1": "RS256", "ed-1": "EdDSA"}
    assert not ring.skipped


def test_key_without_kid_is_skipped_by_index() -> None:
    no_kid = {k: v for k, v in ec_jwk().items() if k != "kid"}
    ring = load_key_set({"keys": [ec_jwk("keep"), no_kid, {**no_kid, "kid": ""}]}, ASYMMETRIC)
    assert set(ring.keys) == {"keep"}
    assert ring.skipped == {"#1": "no kid", "#2": "no kid"}


def test_duplicated_kid_drops_both_copies() -> None:
    ring = load_key_set({"keys": [ec_jwk("dup"), rsa_jwk("dup", alg="RS256"), ec_jwk("other")]}, ASYMMETRIC)
    assert set(ring.keys) == {"other"}
    assert ring.skipped == {"dup": "kid appears more than once"}
    # Three copies: still one entry, still none loaded.
    ring = load_key_set({"keys": [ec_jwk("dup"), ec_jwk("dup"), ec_jwk("dup")]}, ASYMMETRIC)
    assert not ring.keys
    assert ring.skipped == {"dup": "kid appears more than once"}


def test_duplicated_kid_drops_both_copies_when_the_first_is_unusable() -> None:
    ring = load_key_set({"keys": [ec_jwk("dup", use="enc"), ec_jwk("dup")]}, ASYMMETRIC)
    assert not ring.keys
    assert ring.skipped == {"dup": "kid appears more than once"}


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
def test_private_members_are_refused(member: str) -> None:
    ring = load_key_set({"keys": [ec_jwk(**{member: "AQAB"})]}, ASYMMETRIC)
    assert not ring.keys
    assert ring.skipped == {"ec-1": "private key material in a public key set"}


def test_private_ec_key_from_a_real_private_jwk_is_refused() -> None:
    from joserfc.jwk import ECKey

    private = ECKey.generate_key("P-256").as_dict(private=True)
    ring = load_key_set({"keys": [{**private, "kid": "priv", "alg": "ES256"}]}, ASYMMETRIC)
    assert ring.skipped == {"priv": "private key material in a public key set"}


def test_rsa_without_alg_needs_exactly_one_rsa_algorithm() -> None:
    document = {"keys": [rsa_jwk()]}
    refused = load_key_set(document, ASYMMETRIC)
    assert not refused.keys
    assert "RSA key without alg" in refused.skipped["rsa-1"]
    assert not load_key_set(document, {"RS256", "PS256"}).keys  # two RSA families: still ambiguous
    assert not load_key_set(document, {"RS256", "RS384", "ES256"}).keys
    for only in ("RS256", "PS256"):
        ring = load_key_set(document, {only, "ES256", "EdDSA"})
        assert ring.keys["rsa-1"].alg == only
        assert not ring.skipped


def test_ec_and_okp_without_alg_take_the_curve_s_algorithm() -> None:
    no_alg = {k: v for k, v in ec_jwk().items() if k != "alg"}
    assert load_key_set({"keys": [no_alg]}, ASYMMETRIC).keys["ec-1"].alg == "ES256"
    assert "not allowed" in load_key_set({"keys": [no_alg]}, {"ES384"}).skipped["ec-1"]
    ed, _ = public_jwk(ALGORITHMS["EdDSA"], ed25519.Ed25519PrivateKey.generate())
    ed = {**ed, "kid": "ed"}
    ed.pop("alg", None)
    assert load_key_set({"keys": [ed]}, {"EdDSA"}).keys["ed"].alg == "EdDSA"
    assert load_key_set({"keys": [ed]}, {"Ed25519"}).keys["ed"].alg == "Ed25519"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"use": "enc"}, "key use is 'enc', not sig"),
        ({"key_ops": ["encrypt"]}, "key_ops ['encrypt'] do not include verify"),
        ({"alg": "ES384"}, "ES384"),
        ({"alg": "HS256"}, "'HS256' is not allowed"),
        ({"alg": "none"}, "'none' is not allowed"),
        ({"crv": "P-384"}, "malformed"),
        ({"kty": "RSA"}, "RSA"),
    ],
)
def test_unusable_keys_are_skipped_with_the_reason(extra: dict[str, Any], reason: str) -> None:
    ring = load_key_set({"keys": [ec_jwk(**extra), ec_jwk("good")]}, ASYMMETRIC)
    assert set(ring.keys) == {"good"}
    assert reason in ring.skipped["ec-1"]


def test_use_sig_and_verify_key_ops_are_accepted() -> None:
    ring = load_key_set({"keys": [ec_jwk(key_ops=["verify"])]}, ASYMMETRIC)
    assert set(ring.keys) == {"ec-1"}


def test_more_than_max_keys_is_a_key_set_error() -> None:
    keys = [ec_jwk(f"k{i}") for i in range(MAX_KEYS)]
    assert MAX_KEYS == 100
    assert len(load_key_set({"keys": keys}, ASYMMETRIC).keys) == MAX_KEYS
    with pytest.raises(KeySetError, match="101 keys"):
        load_key_set({"keys": [*keys, ec_jwk("one-more")]}, ASYMMETRIC)


@pytest.mark.parametrize(
    "document",
    [None, [], ["not", "a", "set"], "keys", 42, {}, {"keys": {}}, {"keys": "x"}, {"key": []}],
)
def test_a_document_that_is_no_jwk_set_is_a_key_set_error(document: Any) -> None:
    with pytest.raises(KeySetError, match="not a JWK set"):
        load_key_set(document, ASYMMETRIC)


def test_non_object_entries_are_skipped() -> None:
    ring = load_key_set({"keys": ["x", 1, None, ec_jwk()]}, ASYMMETRIC)
    assert set(ring.keys) == {"ec-1"}
    assert ring.skipped == {"#0": "not a JSON object", "#1": "not a JSON object", "#2": "not a JSON object"}


def _weak_rsa_jwk() -> dict[str, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()  # noqa: S505

    def b64(n: int) -> str:
        return b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()

    return {"kty": "RSA", "kid": "weak", "alg": "RS256", "use": "sig", "n": b64(numbers.n), "e": b64(numbers.e)}


def test_weak_rsa_key_is_skipped() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see the next test
        ring = load_key_set({"keys": [_weak_rsa_jwk(), ec_jwk()]}, ASYMMETRIC)
    assert set(ring.keys) == {"ec-1"}
    assert ring.skipped == {"weak": "RS256 needs an RSA key of at least 2048 bits"}


def test_weak_rsa_key_is_skipped_without_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ring = load_key_set({"keys": [_weak_rsa_jwk()]}, ASYMMETRIC)
    assert not ring.keys
    assert [str(w.message) for w in caught] == []
