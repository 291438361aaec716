"""Label and field selectors, as ``?labelSelector=`` and ``?fieldSelector=`` on list and watch requests spell them.

Every Kubernetes client filters server-side with these strings (``kubectl get -l``,
informers, KubeStash's own controllers), so the grammar, the matching rules and
the error messages follow kube-apiserver's (``k8s.io/apimachinery`` ``labels``
and ``fields`` packages) rather than anything looser: a selector that our
server accepts but a real cluster rejects, or the reverse, would make tests
against this server lie. The module is pure: strings and mappings in,
immutable selectors out, so request handlers can parse once and match each
stored object cheaply.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``,
``a`` (exists), ``!a`` (does not exist) and kube's ``a>1`` / ``a<1`` integer
comparisons, comma-separated and whitespace tolerant; ``{matchLabels,
matchExpressions}`` objects convert to the same representation.

Field selectors: ``f=v``, ``f==v``, ``f!=v``, comma-separated, with kube's
backslash escaping of ``\\``, ``,`` and ``=`` in values. A field absent from an
object compares as the empty string, like kube's field sets. Unlike
kube-apiserver, whitespace around terms is tolerated.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "from_label_selector_object",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector that kube-apiserver would reject with 400 Bad Request."""


class Operator(StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"

# --------------------------------------------------------------------------- validation (k8s.io/apimachinery)

_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_RE = re.compile(f"^{_NAME_FMT}$")
_LABEL_VALUE_RE = re.compile(f"^({_NAME_FMT})?$")
_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '" + _NAME_FMT + "')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(" + _NAME_FMT + ")?')"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '"
    + _DNS1123_SUBDOMAIN_FMT
    + "')"
)


def _qualified_name_errors(key: str) -> list[str]:
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        if len(prefix) > 253:
            return ["prefix part must be no more than 253 characters"]
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return ["prefix part " + _DNS1123_SUBDOMAIN_MSG]
    else:
        return ["a qualified name " + _NAME_MSG]
    if not name:
        return ["name part must be non-empty"]
    errors = []
    if len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _NAME_RE.match(name):
        errors.append("name part " + _NAME_MSG)
    return errors


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _validate_key(key: str) -> None:
    errors = _qualified_name_errors(key)
    if errors:
        raise SelectorError(f"key: Invalid value: {_quote(key)}: {'; '.join(errors)}")


def _validate_value(index: int, value: str) -> None:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errors.append(_LABEL_VALUE_MSG)
    if errors:
        raise SelectorError(f"values[{index}]: Invalid value: {_quote(value)}: {'; '.join(errors)}")


def _is_int64(value: str) -> bool:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        return False
    return -(2**63) <= int(value) < 2**63


# --------------------------------------------------------------------------- label selectors


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: ``key operator values``."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate_key(self.key)
        op = self.operator
        if op in (Operator.IN, Operator.NOT_IN) and not self.values:
            raise SelectorError("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty")
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS) and len(self.values) != 1:
            raise SelectorError(
                f"values: Invalid value: {list(self.values)}: exact-match compatibility requires one single value"
            )
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and self.values:
            raise SelectorError(
                f"values: Invalid value: {list(self.values)}: values set must be empty for exists and does not exist"
            )
        if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
            if len(self.values) != 1:
                raise SelectorError(
                    f"values: Invalid value: {list(self.values)}: "
                    "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            if not _is_int64(self.values[0]):
                raise SelectorError(
                    f"values[0]: Invalid value: {_quote(self.values[0])}: "
                    "for 'Gt', 'Lt' operators, the value must be an integer"
                )
        for index, value in enumerate(self.values):
            _validate_value(index, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        # Gt / Lt: the label must exist and hold an integer.
        if not present or not _is_int64(labels[self.key]):
            return False
        have, want = int(labels[self.key]), int(self.values[0])
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({','.join(self.values)})"
        if op is Operator.GREATER_THAN:
            return f"{self.key}>{self.values[0]}"
        if op is Operator.LESS_THAN:
            return f"{self.key}<{self.values[0]}"
        return f"{self.key}{op.value}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold (logical AND); no requirements selects everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


class _Tok(Enum):
    IDENTIFIER = "identifier"
    END = "end of string"
    OPEN = "("
    CLOSE = ")"
    COMMA = ","
    NOT = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    GREATER = ">"
    LESS = "<"
    IN = "in"
    NOT_IN = "notin"
    ERROR = "error"


_SYMBOLS = {
    "!": _Tok.NOT,
    "!=": _Tok.NOT_EQUALS,
    "(": _Tok.OPEN,
    ")": _Tok.CLOSE,
    ",": _Tok.COMMA,
    "=": _Tok.EQUALS,
    "==": _Tok.DOUBLE_EQUALS,
    ">": _Tok.GREATER,
    "<": _Tok.LESS,
}
_SPECIAL = frozenset("=!(),><")


def _lex(text: str) -> list[tuple[_Tok, str]]:
    """Kubernetes' selector lexer: identifiers are runs of anything but whitespace and ``=!(),><``."""
    tokens: list[tuple[_Tok, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL:
            # Longest run of special characters that still spells a known symbol.
            best: tuple[_Tok, str] | None = None
            j = i
            while j < n and text[j] in _SPECIAL:
                candidate = text[i : j + 1]
                if candidate in _SYMBOLS:
                    best = (_SYMBOLS[candidate], candidate)
                elif best is not None:
                    break
                j += 1
            if best is None:
                tokens.append((_Tok.ERROR, f"error expected: keyword found '{text[i:j]}'"))
                return tokens
            tokens.append(best)
            i += len(best[1])
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            word = text[i:j]
            tok = _Tok.IN if word == "in" else _Tok.NOT_IN if word == "notin" else _Tok.IDENTIFIER
            tokens.append((tok, word))
            i = j
    tokens.append((_Tok.END, ""))
    return tokens


class _Parser:
    """Recursive-descent parser mirroring kube's, including its two lexical contexts.

    In "values" context the keywords ``in``/``notin`` are ordinary identifiers, so
    ``in in (notin)`` is a valid selector on a label called ``in``.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def _peek(self, values: bool = True) -> tuple[_Tok, str]:
        tok, lit = self.tokens[min(self.pos, len(self.tokens) - 1)]
        if values and tok in (_Tok.IN, _Tok.NOT_IN):
            tok = _Tok.IDENTIFIER
        return tok, lit

    def _next(self, values: bool = True) -> tuple[_Tok, str]:
        item = self._peek(values)
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok in (_Tok.IDENTIFIER, _Tok.NOT):
                try:
                    requirements.append(self._requirement())
                except SelectorError as err:
                    raise SelectorError(f"unable to parse requirement: {err}") from None
                tok, lit = self._next()
                if tok is _Tok.END:
                    return requirements
                if tok is _Tok.COMMA:
                    tok2, lit2 = self._peek()
                    if tok2 not in (_Tok.IDENTIFIER, _Tok.NOT):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                    continue
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            if tok is _Tok.END:
                return requirements
            raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> Requirement:
        tok, lit = self._next()
        negated = tok is _Tok.NOT
        if negated:
            tok, lit = self._next()
        if tok is not _Tok.IDENTIFIER:
            raise SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        _validate_key(key)
        if negated:
            # Unary; whatever follows ``!a`` (``!a=b``) is reported by the caller as a bad separator.
            return Requirement(key, Operator.DOES_NOT_EXIST)
        if self._peek()[0] in (_Tok.END, _Tok.COMMA):
            return Requirement(key, Operator.EXISTS)
        op = self._operator()
        values = self._values() if op in (Operator.IN, Operator.NOT_IN) else self._exact_value()
        return Requirement(key, op, values)

    def _operator(self) -> Operator:
        tok, lit = self._next(values=False)
        ops = {
            _Tok.IN: Operator.IN,
            _Tok.NOT_IN: Operator.NOT_IN,
            _Tok.EQUALS: Operator.EQUALS,
            _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
            _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
            _Tok.GREATER: Operator.GREATER_THAN,
            _Tok.LESS: Operator.LESS_THAN,
        }
        if tok not in ops:
            raise SelectorError(f"found '{lit}', expected: {_BINARY_OPERATORS}")
        return ops[tok]

    def _exact_value(self) -> tuple[str, ...]:
        tok, lit = self._peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return ("",)
        tok, lit = self._next()
        if tok is _Tok.IDENTIFIER:
            return (lit,)
        raise SelectorError(f"found '{lit}', expected: identifier")

    def _values(self) -> tuple[str, ...]:
        tok, lit = self._next()
        if tok is not _Tok.OPEN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok is _Tok.CLOSE:  # "()" is the set holding the empty string
            self._next()
            return ("",)
        if tok not in (_Tok.IDENTIFIER, _Tok.COMMA):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values: list[str] = []
        expect_value = True
        while True:
            tok, lit = self._next()
            if tok is _Tok.IDENTIFIER and expect_value:
                values.append(lit)
                expect_value = False
            elif tok is _Tok.COMMA:
                if expect_value:  # "(,", ",," and ",)" stand for empty values
                    values.append("")
                expect_value = True
            elif tok is _Tok.CLOSE:
                if expect_value:
                    values.append("")
                break
            elif expect_value:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")
            else:
                raise SelectorError(f"found '{lit}', expected: ',' or ')'")
        return tuple(sorted(set(values)))


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``?labelSelector=``; the empty string selects everything."""
    return LabelSelector(tuple(_Parser(text).parse()))


def from_label_selector_object(sel: Mapping[str, Any]) -> LabelSelector:
    """Convert a ``metav1.LabelSelector`` (``{matchLabels, matchExpressions}``); ``{}`` selects everything."""
    requirements: list[Requirement] = []
    match_labels = sel.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels: must be an object")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels[{key}]: must be a string")
        requirements.append(Requirement(str(key), Operator.EQUALS, (value,)))
    expressions = sel.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions: must be a list")
    operators = {
        "In": Operator.IN,
        "NotIn": Operator.NOT_IN,
        "Exists": Operator.EXISTS,
        "DoesNotExist": Operator.DOES_NOT_EXIST,
    }
    for expr in expressions:
        if not isinstance(expr, Mapping):
            raise SelectorError("matchExpressions: each item must be an object")
        op_name = expr.get("operator")
        if op_name not in operators:
            raise SelectorError(f"{_quote(str(op_name))} is not a valid label selector operator")
        raw_values = expr.get("values") or []
        if not isinstance(raw_values, list) or not all(isinstance(v, str) for v in raw_values):
            raise SelectorError("matchExpressions: values must be a list of strings")
        values = tuple(sorted(set(raw_values)))
        requirements.append(Requirement(str(expr.get("key", "")), operators[str(op_name)], values))
    return LabelSelector(tuple(requirements))


# --------------------------------------------------------------------------- field selectors

_DEFAULT_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negated: bool = False

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (_field_value(obj, self.field) == self.value) != self.negated

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'!=' if self.negated else '='}{escaped}"


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal, if the selector pins it (lets a handler look one object up)."""
        for r in self.requirements:
            if r.field == field and not r.negated:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash."""
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """``lhs``, operator, ``rhs`` at the first unescaped operator."""
    escaped = False
    for i, ch in enumerate(term):
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape(value: str) -> str:
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, supported: Collection[str] = _DEFAULT_FIELDS) -> FieldSelector:
    """Parse ``?fieldSelector=``; fields outside ``supported`` are refused as kube-apiserver does."""
    requirements: list[FieldRequirement] = []
    for raw in _split_terms(text):
        term = raw.strip()
        if not term:
            continue
        parts = _split_term(term)
        if parts is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        lhs, op, rhs = parts
        field = lhs.strip()
        if not field:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        value = _unescape(rhs.strip())
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value, negated=op == "!="))
    return FieldSelector(tuple(requirements))
