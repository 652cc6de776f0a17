"""oauth.parse_form: the split without parse_qsl (a form with nothing to unquote) gives what
parse_qsl (strict, blank values kept) gives, and refuses what it refuses."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jwks_service.errors import InvalidRequestError
from jwks_service.http.oauth import FORM_TYPE, parse_form


def reference(body: bytes) -> dict[str, str] | None:
    """What parse_form must give: parse_qsl's pairs, or None where parse_form must refuse."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None
        form[key] = value
    return form


def parsed(body: bytes) -> dict[str, str] | None:
    try:
        return parse_form(FORM_TYPE, body)
    except InvalidRequestError:
        return None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"grant_type=client_credentials",
        b"grant_type=client_credentials&scope=read",
        b"grant_type",
        b"grant_type=client_credentials&",
        b"&grant_type=client_credentials",
        b"a=1&&b=2",
        b"=x",
        b"a=",
        b"a==b",
        b"a=1&a=2",
        b"a=1;b=2",
        b"scope=read+write",
        b"token=a%2Bb",
        b"a=%zz",
        b"a=\xff",
    ],
)
def test_known_forms(body: bytes) -> None:
    assert parsed(body) == reference(body)


@given(st.lists(st.sampled_from(["a", "b", "=", "&", ";", "+", "%", "2", "0", "x", "é", " "]), max_size=12))
def test_same_as_parse_qsl(parts: list[str]) -> None:
    body = "".join(parts).encode("utf-8")
    assert parsed(body) == reference(body)


def test_content_type_is_checked() -> None:
    with pytest.raises(InvalidRequestError):
        parse_form("application/json", b"grant_type=client_credentials")
    assert parse_form("Application/X-WWW-Form-URLEncoded; charset=utf-8", b"a=b") == {"a": "b"}
