"""containerd's filter language, for ``list``/``walk`` calls.

A filter string is a comma-separated list of selectors that must all match (AND)::

    <fieldpath>[<op><value>]     op: == (equal), != (not equal), ~= (regular expression)

A bare fieldpath tests presence. Fieldpaths are dotted; a segment may be double-quoted to
hold any characters (``labels."containerd.io/gc.root"``). Values are bare (anything up to a
comma or space) or double-quoted with Go escapes; after ``~=`` a value may also be quoted
with ``/.../`` or ``|...|``. Several filter strings are alternatives (OR). No filters, or an
empty string, match everything.

Objects are seen through an *adaptor*: a callable taking a fieldpath tuple and returning
``(value, present)``. :func:`label_adaptor` builds the usual one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import attrs

from ocistore import errors

__all__ = [
    "ALWAYS",
    "Adaptor",
    "AllOf",
    "AnyOf",
    "Filter",
    "Selector",
    "label_adaptor",
    "parse_filter",
    "parse_filters",
]

Adaptor = Callable[[tuple[str, ...]], tuple[str, bool]]
"""Returns ``(value, present)`` for a fieldpath of the object being filtered."""


class Filter:
    """A parsed filter: ``match(adaptor)`` says whether the adapted object is selected."""

    def match(self, adaptor: Adaptor) -> bool:
        """Whether the object behind ``adaptor`` is selected (the base filter selects all)."""
        return True


@attrs.frozen
class _Always(Filter):
    def match(self, adaptor: Adaptor) -> bool:
        return True


ALWAYS: Filter = _Always()
"""The filter that matches everything."""


@attrs.frozen
class Selector(Filter):
    """One ``fieldpath [op value]`` term. ``op`` is ``"?"`` for presence."""

    fieldpath: tuple[str, ...]
    op: str = "?"
    value: str = ""
    regex: re.Pattern[str] | None = attrs.field(default=None, eq=False, repr=False)

    def match(self, adaptor: Adaptor) -> bool:
        """Test the term on the adapted object.

        ``?``: the field is present; ``==``: present and equal; ``!=``: the value differs
        (adaptors report an absent field as ``""``, so it matches unless ``value`` is empty,
        as in containerd); ``~=``: the regular expression matches somewhere in the value.
        """
        value, present = adaptor(self.fieldpath)
        if self.op == "?":
            return present
        if self.op == "==":
            return present and value == self.value
        if self.op == "!=":
            return value != self.value
        return self.regex is not None and self.regex.search(value) is not None


@attrs.frozen
class AllOf(Filter):
    """Every filter must match (the selectors of one filter string)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        """True if every filter matches (so an empty ``AllOf`` matches everything)."""
        return all(f.match(adaptor) for f in self.filters)


@attrs.frozen
class AnyOf(Filter):
    """At least one filter must match (several filter strings)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        """True if at least one filter matches (so an empty ``AnyOf`` matches nothing)."""
        return any(f.match(adaptor) for f in self.filters)


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

_EOF, _FIELD, _VALUE, _QUOTED, _SEP, _OP, _ILLEGAL = "eof", "field", "value", "quoted", "sep", "op", "bad"
_QUOTES = '"/|'
_OP_CHARS = "=!~"
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
}  # fmt: skip
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


@attrs.frozen
class _Token:
    kind: str
    pos: int
    text: str = ""  # field/value text, decoded quoted text, or the error message (illegal)
    quote: str = ""  # the quote character of a quoted token


def _is_field_char(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _is_value_char(c: str) -> bool:
    return c != "," and not c.isspace() and c.isprintable()


class _Scanner:
    """Splits a filter string into tokens; after an operator, the next bare word is a value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.want_value = False

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        while True:
            tok = self._next()
            out.append(tok)
            if tok.kind in (_EOF, _ILLEGAL):
                return out

    def _next(self) -> _Token:
        text = self.text
        while self.pos < len(text) and text[self.pos].isspace():
            self.pos += 1
        start = self.pos
        if start >= len(text):
            return _Token(_EOF, start)
        c = text[start]
        if c == "\0":
            return _Token(_ILLEGAL, start, "unexpected null character")
        if c in _QUOTES:
            self.want_value = False
            return self._quoted(c)
        if c in ",.":
            self.pos += 1
            self.want_value = False
            return _Token(_SEP, start, c)
        if c in _OP_CHARS:
            while self.pos < len(text) and text[self.pos] in _OP_CHARS:
                self.pos += 1
            self.want_value = True
            return _Token(_OP, start, text[start : self.pos])
        if self.want_value and _is_value_char(c):
            while self.pos < len(text) and _is_value_char(text[self.pos]):
                self.pos += 1
            self.want_value = False
            return _Token(_VALUE, start, text[start : self.pos])
        if _is_field_char(c):
            while self.pos < len(text) and _is_field_char(text[self.pos]):
                self.pos += 1
            return _Token(_FIELD, start, text[start : self.pos])
        self.pos += 1
        return _Token(_ILLEGAL, start, f"unexpected character {c!r}")

    def _quoted(self, quote: str) -> _Token:
        start = self.pos
        self.pos += 1
        out = bytearray()
        text = self.text
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                return _Token(_ILLEGAL, start, "quoted literal not terminated")
            c = text[self.pos]
            self.pos += 1
            if c == quote:
                break
            if c != "\\":
                out += c.encode("utf-8", "surrogatepass")
                continue
            err = self._escape(quote, out)
            if err:
                return _Token(_ILLEGAL, start, err)
        try:
            decoded = out.decode("utf-8")
        except UnicodeDecodeError:
            return _Token(_ILLEGAL, start, "quoted literal is not valid UTF-8 after unescaping")
        return _Token(_QUOTED, start, decoded, quote)

    def _escape(self, quote: str, out: bytearray) -> str:
        """Decode the escape after a backslash into ``out``; returns an error message or ``""``."""
        text = self.text
        if self.pos >= len(text):
            return "quoted literal not terminated"
        c = text[self.pos]
        self.pos += 1
        if c in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[c].encode()
        elif c == quote:
            out += c.encode()
        elif c in "01234567":
            digits = text[self.pos - 1 : self.pos + 2]
            if len(digits) < 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                return "illegal octal escape sequence"
            self.pos += 2
            out.append(int(digits, 8))
        elif c in _HEX_ESCAPES:
            n = _HEX_ESCAPES[c]
            digits = text[self.pos : self.pos + n]
            if len(digits) < n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                return "illegal hexadecimal escape sequence"
            self.pos += n
            value = int(digits, 16)
            if c == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                return "escaped code point out of range"
            else:
                out += chr(value).encode()
        else:
            return f"illegal escape sequence '\\{c}'"
        return ""


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Parser:
    """``selectors := selector ("," selector)*``; ``selector := fieldpath [op value]``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _Scanner(text).tokens()
        self.i = 0

    def parse(self) -> Filter:
        selectors = [self._selector()]
        while True:
            tok = self._peek()
            if tok.kind == _EOF:
                return AllOf(tuple(selectors))
            if tok.kind == _SEP and tok.text == ",":
                self._take()
                selectors.append(self._selector())
                continue
            self._fail(tok, "expected ',' or the end of the filter")

    def _peek(self) -> _Token:
        return self.tokens[self.i]

    def _take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind not in (_EOF, _ILLEGAL):
            self.i += 1
        return tok

    def _selector(self) -> Selector:
        path = self._fieldpath()
        tok = self._peek()
        if tok.kind == _EOF or (tok.kind == _SEP and tok.text == ","):
            return Selector(path)
        op = self._take()
        if op.kind != _OP:
            self._fail(op, "expected an operator ('==', '!=' or '~=')")
        if op.text not in ("==", "!=", "~="):
            self._fail(op, f"unsupported operator {op.text!r} (use '==', '!=' or '~=')")
        value = self._value(regex=op.text == "~=")
        if op.text != "~=":
            return Selector(path, op.text, value)
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise errors.InvalidArgument(
                f"invalid filter {self.text!r}: bad regular expression {value!r}: {exc}"
            ) from None
        return Selector(path, op.text, value, pattern)

    def _fieldpath(self) -> tuple[str, ...]:
        parts = [self._field()]
        while (tok := self._peek()).kind == _SEP and tok.text == ".":
            self._take()
            parts.append(self._field())
        return tuple(parts)

    def _field(self) -> str:
        tok = self._take()
        if tok.kind == _FIELD:
            return tok.text
        if tok.kind == _QUOTED:
            if tok.quote != '"':
                self._fail(tok, "invalid quote encountered (field names are quoted with '\"')")
            return tok.text
        self._fail(tok, "expected a field name or a quoted field")

    def _value(self, regex: bool) -> str:
        tok = self._take()
        if tok.kind in (_VALUE, _FIELD):
            return tok.text
        if tok.kind == _QUOTED:
            if tok.quote != '"' and not regex:
                self._fail(tok, f"invalid quote encountered ({tok.quote}...{tok.quote} is only for '~=')")
            return tok.text
        self._fail(tok, "expected a value or a quoted value")

    def _fail(self, tok: _Token, message: str) -> NoReturn:
        """Raise InvalidArgument at ``tok`` (an illegal token's own message wins)."""
        if tok.kind == _ILLEGAL:
            message = tok.text
        text, pos = self.text, tok.pos
        where = f"[{text[:pos]} >|{text[pos]}|< {text[pos + 1 :]}]" if pos < len(text) else "at the end"
        raise errors.InvalidArgument(f"invalid filter {text!r}: {message} {where}")


def parse_filter(text: str) -> Filter:
    """Parse one filter string (its selectors are ANDed); ``""`` matches everything."""
    if not isinstance(text, str):
        raise errors.InvalidArgument(f"a filter must be a string, got {type(text).__name__}")
    if text == "":
        return ALWAYS
    return _Parser(text).parse()


def parse_filters(filters: str | Sequence[str] | None) -> Filter:
    """Parse one filter string, or a list of them that are ORed; ``None``/``[]`` match all.

    Malformed filters raise InvalidArgument naming the filter and the position.
    """
    if filters is None:
        return ALWAYS
    if isinstance(filters, str):
        return parse_filter(filters)
    parsed = tuple(parse_filter(f) for f in filters)
    if not parsed:
        return ALWAYS
    return parsed[0] if len(parsed) == 1 else AnyOf(parsed)


def label_adaptor(
    fields: Mapping[str, str],
    labels: Mapping[str, str],
    extra_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> Adaptor:
    """An adaptor over plain fields and label-like maps.

    ``labels.<k>`` looks ``k`` up in ``labels`` (the remaining path segments joined with
    ``.``, so ``labels.a.b`` and ``labels."a.b"`` are the same key); ``<name>.<k>`` does the
    same in ``extra_maps[name]`` (e.g. ``annotations``). Any other fieldpath, joined with
    ``.``, is looked up in ``fields``: a key present there is present, even with value ``""``.
    An empty map never matches.
    """
    maps: dict[str, Mapping[str, str]] = {"labels": labels, **(extra_maps or {})}

    def adapt(fieldpath: tuple[str, ...]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        head, rest = fieldpath[0], fieldpath[1:]
        if head in maps:
            table = maps[head]
            if not rest or not table:
                return "", False
            key = ".".join(rest)
            return (table[key], True) if key in table else ("", False)
        key = ".".join(fieldpath)
        return (fields[key], True) if key in fields else ("", False)

    return adapt
