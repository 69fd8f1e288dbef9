"""The containerd filter language (cases modelled on containerd's ``pkg/filters`` tests)."""

from __future__ import annotations

import pytest

from ocistore import errors
from ocistore.filters import ALWAYS, Adaptor, Filter, label_adaptor, parse_filter, parse_filters


def _entry(name: str = "", other: str = "", labels: dict[str, str] | None = None) -> Adaptor:
    fields = {k: v for k, v in (("name", name), ("other", other)) if v}
    return label_adaptor(fields, labels or {})


CORPUS = [
    ("foo", "", {"foo": "true"}),
    ("bar", "", {}),
    ("foo", "", {"foo": "present", "more complex label": "present"}),
    ("bar", "", {"bar": "true"}),
    ("fooer", "", {'more complex label with \\ and "': "present"}),
    ("fooer", "", {'more complex label with \\ and ".post': "present"}),
    ("baz", "too complex, yo", {}),
    ("bazo", "abc", {}),
    ("compound", "", {"foo": "omg_asdf.asdf-qwer"}),
]


def _matching(flt: Filter) -> list[int]:
    return [i for i, (n, o, lab) in enumerate(CORPUS) if flt.match(_entry(n, o, lab))]


ALL = list(range(len(CORPUS)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ALL),
        ("name", ALL),
        ("labels.foo", [0, 2, 8]),
        ("labels.foo,name", [0, 2, 8]),
        ("labels.foo==true", [0]),
        ("labels.foo==omg_asdf.asdf-qwer", [8]),
        ("name==bar", [1, 3]),
        ("name!=bar", [0, 2, 4, 5, 6, 7, 8]),
        ("name==bar,labels.bar", [3]),
        ('other=="too complex, yo"', [6]),
        ("other~=[abc]+,name!=foo", [6, 7]),
        ("other~=/[abc]+/,name!=foo", [6, 7]),
        ("other~=/[abc]{1,2}/,name!=foo", [6, 7]),
        ("other~=|[abc]{1,2}|,name!=foo", [6, 7]),
        ('other~=/[abc]{0,1}"\\//,name!=foo', []),  # valid syntax, matches nothing
        ("name==bar,labels.bar==true", [3]),
        ("name==bar,labels.bar==wrong", []),
        ('name==foo,labels."more complex label"', [2]),
        ('labels."more complex label with \\\\ and \\""==present', [4]),
        ('labels."more complex label with \\\\ and \\"".post==present', [5]),
        ("  name == bar , labels.bar  ", [3]),  # whitespace between tokens is ignored
        ("name~=^ba", [1, 3, 6, 7]),
        ("name~=r$", [1, 3, 4, 5]),
        ('name=="\\x66oo"', [0, 2]),
        ('name=="\\u0066oo"', [0, 2]),
        ('name=="\\146oo"', [0, 2]),
    ],
)
def test_corpus(text: str, expected: list[int]) -> None:
    assert _matching(parse_filter(text)) == expected
    assert _matching(parse_filters(text)) == expected
    assert _matching(parse_filters([text])) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labels.|foo|==omg_asdf.asdf-qwer", r"invalid quote encountered .*\[labels\. >\|\|\|< foo"),
        ('labels.?"more complex label"==present', r"\[labels\. >\|\?\|< "),
        ("name==foo,", "expected a field name or a quoted field at the end"),
        ("labels.", "expected a field name or a quoted field at the end"),
        ("image~=,id?=?fbaq", r"expected a value or a quoted value \[image~= >\|,\|< id"),
        ("labels.ns/key==value", r"quoted literal not terminated \[labels\.ns >\|/\|< key==value\]"),
        ("labels.key==/value", r"quoted literal not terminated \[labels\.key== >\|/\|< value\]"),
        ("name==/foo/", "invalid quote encountered"),
        ("name=foo", "unsupported operator '='"),
        ("name===foo", "unsupported operator '==='"),
        ("name<foo", "unexpected character '<'"),
        ("name foo", "expected an operator"),
        ('name=="foo', "quoted literal not terminated"),
        ('name=="a\\qb"', r"illegal escape sequence '\\q'"),
        ('name=="\\x6"', "illegal hexadecimal escape"),
        ('name=="\\9"', r"illegal escape sequence '\\9'"),
        ('name=="\\400"', "illegal octal escape"),
        ('name=="\\xff"', "not valid UTF-8"),
        ('name=="a\nb"', "not terminated"),
        ("name==a\0b", "null"),
        ("name~=(", "bad regular expression"),
        ("==foo", "expected a field name"),
        (",name", "expected a field name"),
        ("name==foo bar", "expected ',' or the end of the filter"),
        ("name,,labels.a", "expected a field name"),
        ("a..b", "expected a field name"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message) as info:
        parse_filter(text)
    assert str(info.value).startswith(f"invalid filter {text!r}")


def test_list_of_filters_is_or() -> None:
    flt = parse_filters(["name==bar,labels.bar", "labels.foo==true"])
    assert _matching(flt) == [0, 3]
    # an empty string among alternatives matches everything, as in containerd
    assert _matching(parse_filters(["name==nope", ""])) == ALL


def test_one_bad_filter_in_a_list_fails_the_whole_list() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"labels\.key==/x"):
        parse_filters(["name==bar", "labels.key==/x"])


@pytest.mark.parametrize("empty", [None, "", [], ()])
def test_no_filters_match_all(empty: str | list[str] | None) -> None:
    assert _matching(parse_filters(empty)) == ALL
    assert parse_filters(empty) is ALWAYS


def test_not_equal_matches_absent_fields() -> None:
    flt = parse_filter("labels.foo!=true")
    assert flt.match(_entry("x", labels={}))
    assert flt.match(_entry("x", labels={"foo": "false"}))
    assert not flt.match(_entry("x", labels={"foo": "true"}))


def test_equal_requires_presence() -> None:
    flt = parse_filter('labels.foo==""')
    assert not flt.match(_entry("x", labels={"bar": "1"}))
    assert flt.match(_entry("x", labels={"foo": ""}))


def test_regex_is_a_search_not_a_full_match() -> None:
    flt = parse_filter("name~=ba")
    assert flt.match(_entry("xbay"))
    assert not parse_filter("name~=^ba$").match(_entry("xbay"))


def test_quoted_label_keys_with_dots_and_slashes() -> None:
    labels = {"containerd.io/gc.root": "2024", "containerd.io/gc.ref.content.l.0": "sha256:x"}
    adapt = label_adaptor({"digest": "sha256:abc"}, labels)
    assert parse_filter('labels."containerd.io/gc.root"').match(adapt)
    assert parse_filter('labels."containerd.io/gc.root"==2024').match(adapt)
    assert parse_filter('labels."containerd.io/gc.root"=="2024"').match(adapt)
    assert parse_filter('labels."containerd.io/gc.ref.content.l.0"~=^sha256:').match(adapt)
    # unquoted segments are re-joined with "." to form the key
    assert parse_filter('labels."containerd.io/gc".root').match(adapt)
    assert parse_filter("digest==sha256:abc").match(adapt)
    assert not parse_filter('labels."containerd.io/gc"').match(adapt)


def test_label_adaptor() -> None:
    adapt = label_adaptor(
        {"name": "docker.io/library/nginx:latest", "target.digest": "sha256:abc", "parent": ""},
        {"a.b": "1"},
        {"annotations": {"org.opencontainers.image.ref.name": "latest"}},
    )
    assert adapt(("name",)) == ("docker.io/library/nginx:latest", True)
    assert adapt(("target", "digest")) == ("sha256:abc", True)
    assert adapt(("parent",)) == ("", True)  # present with an empty value
    assert adapt(("missing",)) == ("", False)
    assert adapt(("labels", "a", "b")) == ("1", True)
    assert adapt(("labels", "a.b")) == ("1", True)
    assert adapt(("labels",)) == ("", False)
    assert adapt(("annotations", "org", "opencontainers", "image", "ref", "name")) == ("latest", True)
    assert adapt(()) == ("", False)
    assert parse_filter('parent!=""').match(adapt) is False
    assert parse_filter("name==docker.io/library/nginx:latest,target.digest==sha256:abc").match(adapt)
    assert parse_filter("annotations.org.opencontainers.image.ref.name==latest").match(adapt)


def test_empty_label_map_never_matches() -> None:
    adapt = label_adaptor({"name": "x"}, {})
    assert not parse_filter("labels.a").match(adapt)
    assert adapt(("labels", "a")) == ("", False)
    assert not parse_filter('labels.a==""').match(adapt)


def test_non_string_filter() -> None:
    with pytest.raises(errors.InvalidArgument, match="must be a string"):
        parse_filters([1])  # type: ignore[list-item]


def test_unicode_values() -> None:
    adapt = label_adaptor({"name": "café"}, {"ключ": "значение"})
    assert parse_filter("name==café").match(adapt)
    assert parse_filter('labels."ключ"==значение').match(adapt)
