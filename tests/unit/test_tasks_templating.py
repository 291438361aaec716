"""``${var}`` expansion in Function args and volume templates, with KubeStash's envsubst semantics."""

from __future__ import annotations

import pytest

from kubestash.tasks.templating import TemplateError, substitute

VARS = {"namespace": "demo", "paths": "/a,/b", "empty": "", "PVC_NAME": "data-0", "POD_ORDINAL": "0"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain references
        ("${namespace}", "demo"),
        ("${missing}", ""),
        ("${PVC_NAME}", "data-0"),
        # defaults: used only when the variable is not set at all
        ("${namespace:=default}", "demo"),
        ("${missing:=default}", "default"),
        ("${missing=default}", "default"),
        ("${missing:-default}", "default"),
        ("${empty:=default}", ""),
        ("${empty=default}", ""),
        # empty default
        ("${missing:=}", ""),
        ("${paths:=}", "/a,/b"),
        # text around and adjacent references
        ("--namespace=${namespace:=default}", "--namespace=demo"),
        ("--paths=${paths:=}", "--paths=/a,/b"),
        ("${namespace}${PVC_NAME}", "demodata-0"),
        ("pre-${namespace}-${POD_ORDINAL}-post", "pre-demo-0-post"),
        ("${missing:=x}${namespace}", "xdemo"),
        # defaults holding references, and defaults with commas, slashes, colons, spaces
        ("${missing:=${namespace}}", "demo"),
        ("${missing:=${other:=deep}}!", "deep!"),
        ("${missing:=/kubestash-tmp}", "/kubestash-tmp"),
        ("${missing:=a,b:c d}", "a,b:c d"),
        # nested-looking braces: the default ends at the first unmatched "}"
        ("${missing:=x{y}z}", "x{yz}"),
        ("{${namespace}}", "{demo}"),
        ("{{namespace}}", "{{namespace}}"),
        # $ on its own, escapes, and forms left exactly as written
        ("$", "$"),
        ("cost: 5$", "cost: 5$"),
        ("$namespace", "$namespace"),
        ("$$", "$"),
        ("$${namespace}", "${namespace}"),
        ("a$$b", "a$b"),
        ("${", "${"),
        ("${namespace", "${namespace"),
        ("${missing:=unclosed", "${missing:=unclosed"),
        ("${}", "${}"),
        ("${name space}", "${name space}"),
        ("${#namespace}", "${#namespace}"),
        ("${namespace^^}", "${namespace^^}"),
        ("${namespace:1:2}", "${namespace:1:2}"),
        ("${namespace/a/b}", "${namespace/a/b}"),
        ("${namespace:?err}", "${namespace:?err}"),
        ("back\\slash ${namespace}", "back\\slash demo"),
        # names may hold dashes and digits, as envsubst's identifiers do
        ("${task-name:=t1}", "t1"),
        ("", ""),
        ("no variables here", "no variables here"),
    ],
)
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, VARS) == expected


def test_value_is_not_expanded_again() -> None:
    assert substitute("${a}", {"a": "${b}", "b": "no"}) == "${b}"


def test_strict_rejects_an_unset_variable_without_default() -> None:
    with pytest.raises(TemplateError) as exc:
        substitute("claim-${PVC_NAME}", {}, strict=True)
    assert exc.value.name == "PVC_NAME"
    assert str(exc.value) == "variable PVC_NAME is not set"


@pytest.mark.parametrize("text", ["${PVC_NAME:=}", "${PVC_NAME:=x}", "${set}", "${set:=${unused}}"])
def test_strict_accepts_defaults_and_set_variables(text: str) -> None:
    assert substitute(text, {"set": "v"}, strict=True) in {"", "x", "v"}


def test_strict_checks_a_default_it_needs() -> None:
    with pytest.raises(TemplateError, match="inner"):
        substitute("${outer:=${inner}}", {}, strict=True)
