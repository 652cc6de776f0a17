"""Wycheproof vectors against our JWS verifier and signature primitives.

The vectors are vendored under ``tests/vectors/wycheproof`` (Apache-2.0, see the README there); a
missing file is a failure, never a skip.

Our verdict must equal Wycheproof's for every ``valid`` and ``invalid`` case (``acceptable`` may go
either way). The few cases where we knowingly disagree are listed in ``JWS_DEVIATIONS`` with the
reason, and the test asserts *our* intended verdict for them, so they still fail if behaviour drifts.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from support import PROJECT_ROOT, VECTORS, algorithms

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import KeyMismatchError, PublicKey, make_verifier, public_key_from_jwk
from jwks_service.errors import InvalidTokenError
from jwks_service.jws import VerificationKey, verify_compact

JWS_FILE = "json_web_signature_test.json"
JWK_FILE = "json_web_key_test.json"

# Raw signature files and the JWS algorithm each one exercises.
RAW_FILES = {
    "ecdsa_secp256r1_sha256_p1363_test.json": "ES256",
    "ecdsa_secp384r1_sha384_p1363_test.json": "ES384",
    "ecdsa_secp521r1_sha512_p1363_test.json": "ES512",
    "ed25519_test.json": "EdDSA",
    "rsa_signature_2048_sha256_test.json": "RS256",
    "rsa_pss_2048_sha256_mgf1_32_test.json": "PS256",
    "hmac_sha256_test.json": "HS256",
}


def test_vectors_are_vendored_in_the_project() -> None:
    """A fresh clone runs every vector test: the files live in the project, with their license."""
    assert VECTORS.is_relative_to(PROJECT_ROOT / "tests")
    for name in (JWS_FILE, JWK_FILE, *RAW_FILES, "LICENSE", "README.md"):
        assert (VECTORS / name).is_file(), f"{VECTORS / name} is missing"
    assert "Apache License" in (VECTORS / "LICENSE").read_text(encoding="utf-8")


# tcId -> (our verdict, why we differ from the file). Each reason is checked by its own test below.
JWS_DEVIATIONS: dict[int, tuple[bool, str]] = {
    346: (False, "RFC 7520 Figure 20: the JWK declares alg PS256, the token says PS384 (one alg per key)"),
    350: (False, "RFC 7520 Figure 20: the JWK declares alg PS256, the token says PS384 (one alg per key)"),
    347: (False, "RFC 7520 Figure 27: the JWK declares alg 'ES521', which is no JWS algorithm"),
    351: (False, "RFC 7520 Figure 27: the JWK declares alg 'ES521', which is no JWS algorithm"),
    367: (True, "a fault of the file: the token is byte for byte tcId 357's, which is valid"),
    370: (True, "a fault of the file: the token is byte for byte tcId 357's, which is valid"),
    372: (False, "a '?' inside the header segment: strict base64url (RFC 7515 §2) refuses it"),
    373: (False, "a '?' inside the payload segment: strict base64url (RFC 7515 §2) refuses it"),
}

# JWK-set rules we cannot test on the server side: it has no JWK-set parser (the SDK will).
JWK_NOT_COVERED: dict[int, str] = {
    1: "MixedKeySet: a key-set question, answered by the SDK's loader (tests/security/test_sdk_wycheproof.py)",
    4: "DuplicateKid: a key-set question, answered by the SDK's loader (tests/security/test_sdk_wycheproof.py)",
    7: "ROCA-vulnerable RSA modulus: no ROCA fingerprint check in jwks_service.crypto",
}


@functools.cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def cases(name: str) -> list[Any]:
    """One pytest.param per test vector, id ``<file stem>-tc<tcId>``, carrying (group index, test)."""
    stem = name.removesuffix("_test.json")
    return [
        pytest.param(gi, test, id=f"{stem}-tc{test['tcId']}")
        for gi, group in enumerate(load(name)["testGroups"])
        for test in group["tests"]
    ]


def header_of(jws: str) -> dict[str, Any]:
    segment = jws.split(".", 1)[0]
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def verification_key(jwk: Mapping[str, Any], alg: str) -> VerificationKey:
    """What a verifier configured with this JWK builds; KeyMismatchError when the key is refused."""
    return VerificationKey(str(jwk.get("kid", "")), alg, make_verifier(ALGORITHMS[alg], public_key_from_jwk(alg, jwk)))


def jws_accepts(jws: object, jwk: Mapping[str, Any], alg: str | None = None) -> bool:
    """Our verdict: True only if the key imports for its one alg and the token verifies with it."""
    if not isinstance(jws, str):
        jws = json.dumps(jws)  # a JSON-serialised JWS given as an object: we only take compact text
    # The alg comes from the key, as a verifier configured with it would; a JWK without one falls
    # back to the token's header, the most permissive choice, so the test is the strictest.
    alg = alg or jwk.get("alg") or header_of(jws).get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        return False
    try:
        key = verification_key(jwk, alg)
    except KeyMismatchError:
        return False
    try:
        verify_compact(jws, {key.kid: key})
    except InvalidTokenError:
        return False
    return True


def group_jwk(group: Mapping[str, Any]) -> dict[str, Any]:
    jwk: dict[str, Any] = group.get("public") or group["private"]
    return jwk


# ----- json_web_signature_test.json -------------------------------------------------------------


@pytest.mark.parametrize(("gi", "test"), cases(JWS_FILE))
def test_json_web_signature(gi: int, test: dict[str, Any]) -> None:
    group = load(JWS_FILE)["testGroups"][gi]
    ours = jws_accepts(test["jws"], group_jwk(group))
    if test["tcId"] in JWS_DEVIATIONS:
        expected, reason = JWS_DEVIATIONS[test["tcId"]]
        assert ours is expected, reason
        return
    if "JsonSerialization" in test["flags"] or not isinstance(test["jws"], str):
        assert not ours, "only compact serialisation is accepted"
        return
    if test["result"] == "acceptable":
        return
    assert ours is (test["result"] == "valid"), test["comment"]


def _jws_test(tc_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    for group in load(JWS_FILE)["testGroups"]:
        for test in group["tests"]:
            if test["tcId"] == tc_id:
                return group, test
    raise AssertionError(f"tcId {tc_id} is not in {JWS_FILE}")


@pytest.mark.parametrize("tc_id", [346, 350])
def test_figure20_is_refused_only_for_its_declared_alg(tc_id: int) -> None:
    group, test = _jws_test(tc_id)
    jwk = group_jwk(group)
    assert jwk["alg"] == "PS256"
    assert header_of(test["jws"])["alg"] == "PS384"
    assert not jws_accepts(test["jws"], jwk)
    # The signature itself is sound: declared for PS384, the same key verifies it.
    assert jws_accepts(test["jws"], {**jwk, "alg": "PS384"})


@pytest.mark.parametrize("tc_id", [347, 351])
def test_figure27_is_refused_only_for_its_bogus_alg(tc_id: int) -> None:
    group, test = _jws_test(tc_id)
    jwk = group_jwk(group)
    assert jwk["alg"] == "ES521"
    with pytest.raises(KeyMismatchError, match="unsupported algorithm"):
        public_key_from_jwk("ES521", jwk)
    # RFC 7520 §4.3 signs with ES512; with the alg corrected the vector verifies.
    assert jws_accepts(test["jws"], {**jwk, "alg": "ES512"})


@pytest.mark.parametrize("tc_id", [367, 370])
def test_padding_vectors_are_copies_of_a_valid_token(tc_id: int) -> None:
    _, test = _jws_test(tc_id)
    _, original = _jws_test(357)
    assert original["result"] == "valid"
    assert test["jws"] == original["jws"]
    assert "=" not in test["jws"]


@pytest.mark.parametrize("tc_id", [372, 373])
def test_inserted_character_is_refused_and_the_clean_token_verifies(tc_id: int) -> None:
    group, test = _jws_test(tc_id)
    assert "?" in test["jws"]
    assert not jws_accepts(test["jws"], group_jwk(group))
    # Control: without the stray character it is a valid token, so the '?' alone is refused.
    assert jws_accepts(test["jws"].replace("?", ""), group_jwk(group))


def test_json_serialisation_objects_are_refused() -> None:
    group, test = _jws_test(1)
    assert jws_accepts(test["jws"], group_jwk(group))  # control: the compact form verifies
    h64, p64, s64 = test["jws"].split(".")
    general = {"payload": p64, "signatures": [{"protected": h64, "signature": s64}]}
    flattened = {"payload": p64, "protected": h64, "signature": s64}
    assert not jws_accepts(general, group_jwk(group))
    assert not jws_accepts(flattened, group_jwk(group))


# ----- json_web_key_test.json -------------------------------------------------------------------


def jwk_set_verdict(keys: list[dict[str, Any]], jws: str) -> bool:
    """Import every key for its declared alg (any refusal rejects the set), then verify by kid."""
    table: dict[str, VerificationKey] = {}
    for jwk in keys:
        alg = jwk.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            return False
        try:
            table[str(jwk.get("kid", ""))] = verification_key(jwk, alg)
        except KeyMismatchError:
            return False
    try:
        verify_compact(jws, table)
    except InvalidTokenError:
        return False
    return True


@pytest.mark.parametrize(("gi", "test"), cases(JWK_FILE))
def test_json_web_key(gi: int, test: dict[str, Any]) -> None:
    if test["tcId"] in JWK_NOT_COVERED:
        pytest.skip(JWK_NOT_COVERED[test["tcId"]])
    group = load(JWK_FILE)["testGroups"][gi]
    keys = (group.get("public") or group["private"])["keys"]
    ours = jwk_set_verdict(keys, test["jws"])
    if test["result"] != "acceptable":
        assert ours is (test["result"] == "valid"), test["comment"]


# ----- raw signature vectors through make_verifier ----------------------------------------------


@functools.cache
def raw_key(name: str, gi: int) -> PublicKey:
    group = load(name)["testGroups"][gi]
    key = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
    return key  # type: ignore[return-value]  # make_verifier's check_key refuses the wrong types


def raw_verifier(name: str, gi: int, test: dict[str, Any]) -> Callable[[bytes, bytes], bool]:
    alg = ALGORITHMS[RAW_FILES[name]]
    if alg.family == "HMAC":
        return make_verifier(alg, bytes.fromhex(test["key"]))
    return make_verifier(alg, raw_key(name, gi))


def _raw_params() -> list[Any]:
    return [pytest.param(name, *p.values, id=p.id, marks=p.marks) for name in RAW_FILES for p in cases(name)]


@pytest.mark.parametrize(("name", "gi", "test"), _raw_params())
def test_raw_signature(name: str, gi: int | None, test: dict[str, Any] | None) -> None:
    assert gi is not None and test is not None
    group = load(name)["testGroups"][gi]
    alg = ALGORITHMS[RAW_FILES[name]]
    if alg.family == "HMAC" and group["keySize"] < 256:
        # RFC 7518 §3.2: an HS256 key under 256 bits is refused when the verifier is built.
        with pytest.raises(KeyMismatchError):
            raw_verifier(name, gi, test)
        return
    verify = raw_verifier(name, gi, test)
    message = bytes.fromhex(test["msg"])
    signature = bytes.fromhex(test["tag"] if alg.family == "HMAC" else test["sig"])
    ours = verify(message, signature)
    if alg.family == "HMAC" and group["tagSize"] != 8 * alg.hash_bytes:
        # HS256 carries the whole tag (RFC 7518 §3.2); a truncated tag never verifies, valid or not.
        assert ours is False
        return
    if test["result"] != "acceptable":
        assert ours is (test["result"] == "valid"), test["comment"]


def test_raw_files_cover_each_algorithm() -> None:
    """Control: the raw tests above really ran valid and invalid cases for every algorithm."""
    for name in RAW_FILES:
        results = {t["result"] for g in load(name)["testGroups"] for t in g["tests"]}
        assert {"valid", "invalid"} <= results, name


@pytest.mark.parametrize("alg_name", algorithms("EC"))
def test_ecdsa_verifier_refuses_a_key_on_another_curve(alg_name: str) -> None:
    other_curve = {"ES256": ec.SECP384R1(), "ES384": ec.SECP256R1(), "ES512": ec.SECP384R1()}[alg_name]
    key = ec.generate_private_key(other_curve).public_key()
    with pytest.raises(KeyMismatchError):
        make_verifier(ALGORITHMS[alg_name], key)


def test_rsa_verifier_refuses_keys_under_2048_bits() -> None:
    small = next(g for g in load(JWK_FILE)["testGroups"] if g["comment"] == "keysize_too_small")
    jwk = small["public"]["keys"][0]
    with pytest.raises(KeyMismatchError):
        public_key_from_jwk("RS256", jwk)
    n, e = (int.from_bytes(base64.urlsafe_b64decode(jwk[m] + "=="), "big") for m in ("n", "e"))
    key = rsa.RSAPublicNumbers(e, n).public_key()
    assert key.key_size == 1024
    for alg in algorithms("RSA", "RSA-PSS"):
        with pytest.raises(KeyMismatchError, match="2048"):
            make_verifier(ALGORITHMS[alg], key)
