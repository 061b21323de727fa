from __future__ import annotations

import pytest

from distrib.refs import ImageRef, InvalidReference


@pytest.mark.parametrize(
    ("text", "normal", "familiar"),
    [
        ("demo/web:1.0", "demo/web:1.0", "demo/web:1.0"),
        ("busybox", "busybox:latest", "busybox:latest"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
        ("docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3"),
        ("docker.io/team/app:3", "docker.io/team/app:3", "team/app:3"),
        ("a__b.c-d/e---f:T_1.2-x", "a__b.c-d/e---f:T_1.2-x", "a__b.c-d/e---f:T_1.2-x"),
        ("My.Registry:443/x", "My.Registry:443/x:latest", "My.Registry:443/x:latest"),
        ("x@sha256:" + "a" * 64, "x@sha256:" + "a" * 64, "x@sha256:" + "a" * 64),
    ],
)
def test_valid_references(text: str, normal: str, familiar: str) -> None:
    ref = ImageRef.parse(text)
    assert str(ref) == normal
    assert ref.familiar == familiar


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a;b", "';'"),
        ("$(touch /tmp/x)", "white space"),
        ("$(id)", "not allowed"),
        ("`id`", "not allowed"),
        ("a'b", "not allowed"),
        ('a"b', "not allowed"),
        ("a b", "white space"),
        ("a\nb", "white space"),
        ("-rm", "starts with '-'"),
        ("Demo/web", "lowercase"),
        ("UPPER", "does not match"),
        ("a:b:c", "does not match"),
        ("a:" + "x" * 129, "does not match"),
        ("", "non-empty"),
        ("a/", "does not match"),
        ("a|b", "not allowed"),
        ("a&&b", "not allowed"),
    ],
)
def test_invalid_references(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        ImageRef.parse(text)
