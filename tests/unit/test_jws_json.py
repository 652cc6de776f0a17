"""The server's shortcut for canonical (orjson-rendered) JSON, tokens.canonical_json, through
jws.parse_json_object: it gives what the strict parser gives, and every text the strict parser
refuses is still refused."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jwks_service.errors import MalformedTokenError
from jwks_service.jws import _decoder, parse_json_object
from jwks_service.tokens import canonical_json


def strict(raw: bytes) -> Any:
    """The strict parser alone (duplicates, NaN, lone surrogates refused): the value, or None."""
    try:
        text = raw.decode("utf-8")
        value = _decoder.decode(text)
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, MalformedTokenError):
        return None
    return value if isinstance(value, dict) else None


def parsed(raw: bytes) -> Any:
    try:
        return parse_json_object(raw, "payload", canonical_json)
    except MalformedTokenError:
        return None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":1}',
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":"\\ud800"}',
        b'{"a":18446744073709551616}',
        b'{"a":-1e400}',
        b"[1]",
        b'{"a":1}x',
        b'{"a":1} ',
        b'{"x":"\\u0078"}',
        b'{"iss":"https://i","exp":1,"iat":0,"jti":"j","sub":"s","client_id":"s","scope":"read"}',
        b"{}",
        b'{"a":1.5,"b":true,"c":null,"d":[1,"2",{"e":false}]}',
    ],
)
def test_known_texts(raw: bytes) -> None:
    assert parsed(raw) == strict(raw)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson renders
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=4), _values, max_size=5), st.booleans())
def test_rendered_objects_and_their_duplicates(value: dict[str, Any], duplicate: bool) -> None:
    raw = orjson.dumps(value)
    if duplicate and value:
        first = orjson.dumps(dict([next(iter(value.items()))]))[1:-1]
        raw = raw[:-1] + b"," + first + b"}"  # the first member again, at the end
        assert parsed(raw) is None
    assert parsed(raw) == strict(raw)


def test_the_shortcut_vouches_only_for_canonical_texts() -> None:
    assert canonical_json(b'{"a":1}') == {"a": 1}
    for raw in (b'{"a":1,"a":1}', b'{"a": 1}', b'{"a":"\\u0078"}', b'{"a":NaN}', b"{", b'{"a":1e400}'):
        assert canonical_json(raw) is None, raw
