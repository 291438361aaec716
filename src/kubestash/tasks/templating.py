"""``${var}`` substitution in Function args and Addon volume templates, as KubeStash's envsubst does it.

KubeStash resolves these with ``gomodules.xyz/envsubst`` (``EvalMap``), a fork of ``drone/envsubst``. The subset
implemented here is the one the catalogs use, with that library's semantics:

* ``${name}`` -- the value of ``name``; a variable that is not set gives ``""`` (``strict=True``: an error).
* ``${name:=word}``, ``${name=word}``, ``${name:-word}`` -- the value of ``name`` if it is *set*, else ``word``.
  A variable set to ``""`` stays empty: the library drops the default as soon as the key exists, unlike bash.
  ``word`` may itself hold ``${...}`` references; it ends at the first ``}`` that closes no reference of its own.
  ``${name:=}`` therefore means "the value, or empty" and is never an error.
* ``$$`` -- a literal ``$`` (so ``$${name}`` is the text ``${name}``), in the text but not inside a ``word``.
* Anything else is left exactly as written: ``$`` alone, ``$name`` (no braces: envsubst ignores it), an unclosed
  ``${``, a name that is not ``[A-Za-z0-9_-]+``, and bash operators the catalogs never use (``${#v}``, ``${v^^}``,
  ``${v:1:2}``, ``${v/a/b}``, ``${v%x}``, ``${v:?x}``, ``${v:+x}``). The Go library rejects these with "bad
  substitution"; keeping them verbatim lets a value that merely *contains* ``$`` pass through untouched.
* Backslashes are literal (drone's ``\\/`` escaping is a JSON-encoding accident of KubeStash, not a feature).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DEFAULT_OPS = (":=", ":-", "=")


class TemplateError(ValueError):
    """A ``${name}`` with no default names a variable nobody set (strict mode only)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"variable {name} is not set")
        self.name = name


def substitute(text: str, variables: Mapping[str, str], *, strict: bool = False) -> str:
    """Replace every ``${...}`` reference in ``text`` (see the module docstring for the exact rules)."""
    out, _ = _text(text, 0, variables, strict, in_word=False)
    return out


def _text(text: str, pos: int, variables: Mapping[str, str], strict: bool, *, in_word: bool) -> tuple[str, int]:
    """Expand from ``pos`` to the end, or (``in_word``) to the ``}`` closing a default word, which is not consumed."""
    parts: list[str] = []
    while pos < len(text):
        char = text[pos]
        if in_word and char == "}":
            break
        if char != "$":
            parts.append(char)
            pos += 1
        elif text.startswith("$$", pos) and not in_word:
            parts.append("$")
            pos += 2
        elif text.startswith("${", pos) and (ref := _reference(text, pos, variables, strict)) is not None:
            value, pos = ref
            parts.append(value)
        else:
            parts.append("$")
            pos += 1
    return "".join(parts), pos


def _reference(text: str, start: int, variables: Mapping[str, str], strict: bool) -> tuple[str, int] | None:
    """Expand the reference at ``text[start:]`` (which begins ``${``); ``None`` when it is not one we expand."""
    name_match = _NAME.match(text, start + 2)
    if name_match is None:
        return None
    name, pos = name_match.group(), name_match.end()
    if text.startswith("}", pos):
        if name in variables:
            return variables[name], pos + 1
        if strict:
            raise TemplateError(name)
        return "", pos + 1
    op = next((op for op in _DEFAULT_OPS if text.startswith(op, pos)), None)
    if op is None:
        return None
    is_set = name in variables
    # The word is only needed when the variable is unset, so only then may it fail in strict mode.
    word, end = _text(text, pos + len(op), variables, strict and not is_set, in_word=True)
    if end >= len(text):  # no closing brace: not a reference
        return None
    return (variables[name] if is_set else word), end + 1


__all__ = ["TemplateError", "substitute"]
