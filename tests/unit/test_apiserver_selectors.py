"""Label and field selectors: kube-apiserver's grammar, matching rules and errors for list/watch filtering."""

from __future__ import annotations

from typing import Any

import pytest

from kubestash.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    from_label_selector_object,
    parse_field_selector,
    parse_label_selector,
)

LABELS: dict[str, str] = {"app": "web", "tier": "frontend", "replicas": "3", "in": "notin"}

# --------------------------------------------------------------------------- label selectors: matching


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=web", True),
        ("app=db", False),
        ("app==web", True),
        ("app==db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # != matches objects without the label
        ("app in (web,db)", True),
        ("app in (db,cache)", False),
        ("missing in (web)", False),
        ("app notin (db,cache)", True),
        ("app notin (web)", False),
        ("missing notin (web)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("replicas>2", True),
        ("replicas>3", False),
        ("replicas<4", True),
        ("replicas<3", False),
        ("app>1", False),  # not an integer: never matches
        ("missing>1", False),
        ("app=web,tier=frontend", True),
        ("app=web,tier=backend", False),
        ("  app = web ,  tier  in ( frontend , backend )  ", True),
        ("app=web,!missing,tier", True),
        ("in=notin", True),  # the keywords are ordinary names in key and value position
        ("in in (notin)", True),
        ("notin notin (in)", True),
    ],
)
def test_label_selector_operators(text: str, expected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is expected


def test_exact_match_with_empty_value_requires_label_with_empty_value() -> None:
    sel = parse_label_selector("a=")
    assert sel.matches({"a": ""})
    assert not sel.matches({"a": "x"})
    assert not sel.matches({})


def test_empty_in_set_holds_the_empty_string() -> None:
    sel = parse_label_selector("a in ()")
    assert sel.matches({"a": ""})
    assert not sel.matches({"a": "x"})
    assert parse_label_selector("a in (x,)").matches({"a": ""})


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_selector_matches_everything(text: str) -> None:
    sel = parse_label_selector(text)
    assert sel.empty
    assert sel.matches({})
    assert sel.matches(LABELS)
    assert sel.matches(None)


def test_prefixed_keys() -> None:
    sel = parse_label_selector("app.kubernetes.io/name=kubestash,!kubestash.com/skip")
    assert sel.matches({"app.kubernetes.io/name": "kubestash"})
    assert not sel.matches({"app.kubernetes.io/name": "kubestash", "kubestash.com/skip": ""})


def test_label_selector_string_form_round_trips() -> None:
    text = "a=b,c==d,e!=f,g in (h,i),j notin (k),l,!m,n>1,o<2"
    sel = parse_label_selector(text)
    assert str(sel) == text
    assert parse_label_selector(str(sel)) == sel


# --------------------------------------------------------------------------- label selectors: errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a in x", "unable to parse requirement: found 'x' expected: '('"),
        ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
        ("a in (x,", "unable to parse requirement: found '', expected: ',', or identifier"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        ("a/b/c", 'unable to parse requirement: key: Invalid value: "a/b/c": a qualified name must consist'),
        ("-a=b", 'unable to parse requirement: key: Invalid value: "-a": name part must consist'),
        ("Example.com/a=b", "prefix part a lowercase RFC 1123 subdomain"),
        ("/a=b", "prefix part must be non-empty"),
        ("a" * 64, "name part must be no more than 63 characters"),
        ("a=b c d", "found 'c'"),
        ("a=-b", 'values[0]: Invalid value: "-b": a valid label must be an empty string'),
        ("a in (x,-y)", "a valid label must be an empty string"),
    ],
)
def test_label_selector_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert message in str(info.value)


def test_selector_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_label_selector("a in")


# --------------------------------------------------------------------------- metav1.LabelSelector objects


def test_label_selector_object_all_operators() -> None:
    sel = from_label_selector_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "backend"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "frontend", "team": "x"})
    assert sel.matches({"app": "web", "tier": "backend", "team": "x", "env": "dev"})
    assert not sel.matches({"app": "db", "tier": "frontend", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "cache", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "frontend", "team": "x", "env": "prod"})
    assert not sel.matches({"app": "web", "tier": "frontend"})
    assert not sel.matches({"app": "web", "tier": "frontend", "team": "x", "legacy": "1"})


def test_empty_label_selector_object_matches_everything() -> None:
    sel = from_label_selector_object({})
    assert sel == LabelSelector()
    assert sel.matches({"any": "thing"})


def test_label_selector_object_equals_string_form() -> None:
    obj = from_label_selector_object({"matchExpressions": [{"key": "a", "operator": "In", "values": ["y", "x", "x"]}]})
    assert obj == parse_label_selector("a in (x,y)")


@pytest.mark.parametrize(
    ("sel", "message"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, '"Gt" is not a valid label'),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "values set can't be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "values set can't be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "values set must be empty"),
        ({"matchExpressions": [{"key": "a b", "operator": "Exists"}]}, 'key: Invalid value: "a b"'),
        ({"matchLabels": {"a": "b c"}}, 'Invalid value: "b c"'),
        ({"matchLabels": {"a": 1}}, "must be a string"),
        ({"matchLabels": ["a"]}, "must be an object"),
        ({"matchExpressions": {"key": "a"}}, "must be a list"),
    ],
)
def test_label_selector_object_errors(sel: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError) as info:
        from_label_selector_object(sel)
    assert message in str(info.value)


# --------------------------------------------------------------------------- field selectors

POD: dict[str, Any] = {
    "metadata": {"name": "web-0", "namespace": "demo"},
    "status": {"phase": "Running"},
    "spec": {"ready": True},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metadata.name=web-0", True),
        ("metadata.name==web-0", True),
        ("metadata.name=web-1", False),
        ("metadata.name!=web-1", True),
        ("metadata.name!=web-0", False),
        ("metadata.name=web-0,metadata.namespace=demo", True),
        ("metadata.name=web-0,metadata.namespace!=demo", False),
        (" metadata.name = web-0 , metadata.namespace==demo ", True),
        ("", True),
        (",", True),
    ],
)
def test_field_selector_operators(text: str, expected: bool) -> None:
    assert parse_field_selector(text).matches(POD) is expected


def test_field_selector_custom_supported_fields_and_missing_fields() -> None:
    supported = ("metadata.name", "status.phase", "spec.nodeName", "spec.ready")
    assert parse_field_selector("status.phase=Running", supported).matches(POD)
    assert not parse_field_selector("status.phase=Pending", supported).matches(POD)
    # Absent fields compare as the empty string, as in kube's field sets.
    assert parse_field_selector("spec.nodeName=", supported).matches(POD)
    assert parse_field_selector("spec.nodeName!=node-1", supported).matches(POD)
    assert parse_field_selector("spec.ready=true", supported).matches(POD)


def test_field_selector_unsupported_field() -> None:
    with pytest.raises(SelectorError, match=r"^field label not supported: status\.phase$"):
        parse_field_selector("status.phase=Running")


def test_field_selector_escaped_values() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b\=c\\d")
    assert sel.requires_exact_match("metadata.name") == "a,b=c\\d"
    assert sel.matches({"metadata": {"name": "a,b=c\\d"}})
    assert str(sel) == r"metadata.name=a\,b\=c\\d"
    # An escaped backslash at the end is fine; a lone one is not (next test).
    assert parse_field_selector(r"metadata.name=a\\").requires_exact_match("metadata.name") == "a\\"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("=x", "can't understand '=x'"),
        (r"metadata.name=a\b", r"invalid field selector: invalid escape sequence: \b"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text)
    assert message in str(info.value)


def test_field_selector_trailing_backslash_is_an_invalid_escape() -> None:
    with pytest.raises(SelectorError, match=r"invalid escape sequence: \\$"):
        parse_field_selector("metadata.name=a\\")


def test_field_selector_requires_exact_match() -> None:
    sel = parse_field_selector("metadata.namespace!=kube-system,metadata.name=web-0")
    assert sel.requires_exact_match("metadata.name") == "web-0"
    assert sel.requires_exact_match("metadata.namespace") is None
    assert parse_field_selector("") == FieldSelector()
    assert parse_field_selector("").empty
