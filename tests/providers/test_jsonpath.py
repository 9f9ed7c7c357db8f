"""JSON paths (pointer and dotted) and URL templates of the generic provider, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden.jsonpath import (
    MISSING,
    compile_path,
    lookup,
    render,
    template_fields,
)

DOC: dict[str, Any] = {
    "data": {
        "attributes": {"phase": "running", "percent": 40, "error": None},
        "outputs": [{"url": "a"}, {"url": "b"}],
    },
    "a/b": {"m~n": 1},
    "a.b": 2,
    "0": "key zero",
    "": "empty key",
    "flag": False,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", DOC),
        ("/data/attributes/phase", "running"),
        ("data.attributes.phase", "running"),
        ("/data/outputs/1/url", "b"),
        ("data.outputs.1.url", "b"),
        ("data.outputs.0", {"url": "a"}),
        ("/a~1b/m~0n", 1),  # RFC 6901 escapes
        ("/a.b", 2),  # a key with a dot needs the pointer
        ("0", "key zero"),  # a number on an object is a key
        ("/", "empty key"),  # the pointer "/" names the key ""
        ("/data/attributes/error", None),  # null is a value...
        ("flag", False),
    ],
)
def test_paths_find_values_in_both_syntaxes(path: str, expected: Any) -> None:
    """Pointer and dotted paths name the same values; numbers index lists and name keys."""
    assert lookup(DOC, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/data/nope",
        "data.attributes.phase.deeper",  # a step into a string
        "data.outputs.2",  # past the end
        "data.outputs.-1",  # no negative indexes
        "data.outputs.01",  # no leading zeros
        "/data/outputs/-",  # the pointer's "append" position holds nothing
        "a.b",  # dotted: key "a", then "b"
    ],
)
def test_paths_that_lead_nowhere_are_missing_not_null(path: str) -> None:
    """...and a path that leads nowhere is MISSING, which is not null."""
    assert lookup(DOC, path) is MISSING
    assert not MISSING


@pytest.mark.parametrize(
    ("path", "segments"),
    [("", ()), ("a", ("a",)), ("/a/b", ("a", "b")), ("a.b.0", ("a", "b", "0")), ("/~1~0", ("/~",))],
)
def test_compile_path(path: str, segments: tuple[str, ...]) -> None:
    """Paths compile to their segments."""
    assert compile_path(path) == segments


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", "/a~2b", "/a~"])
def test_malformed_paths_are_refused(path: str) -> None:
    """An empty dotted segment or a bad pointer escape is a ValueError, caught at settings."""
    with pytest.raises(ValueError, match=r"segment|escape|followed"):
        compile_path(path)


@pytest.mark.parametrize(
    ("template", "values", "url"),
    [
        ("https://x/jobs/{id}", {"id": "42"}, "https://x/jobs/42"),
        (
            "https://x/p/{project}/jobs/{id}",
            {"id": "7", "project": "my p"},
            "https://x/p/my%20p/jobs/7",
        ),
        ("https://x/jobs/{id}", {"id": "a/../b"}, "https://x/jobs/a%2F..%2Fb"),
        ("https://x/jobs/{id}", {"id": "x?admin=1#f"}, "https://x/jobs/x%3Fadmin%3D1%23f"),
        ("https://x/jobs?job={id}&k=1", {"id": "a&b=c"}, "https://x/jobs?job=a%26b%3Dc&k=1"),
        (
            "https://{region}.x/jobs/{id}",
            {"id": "1", "region": "eu@evil"},
            "https://eu%40evil.x/jobs/1",
        ),
    ],
)
def test_templates_quote_values_whole(template: str, values: dict[str, str], url: str) -> None:
    """A value fills one segment or query value, encoded, and can never add a path step,
    a query, a fragment or user info."""
    assert render(template, values) == url


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_templates_refuse_dot_segments(value: str) -> None:
    """A value of '.' or '..' would be resolved as a path step by the client: refused."""
    with pytest.raises(ValueError, match="cannot be"):
        render("https://x/jobs/{id}/status", {"id": value})


def test_a_missing_value_names_its_placeholder() -> None:
    """A placeholder without a value is a KeyError naming it."""
    with pytest.raises(KeyError, match="project"):
        render("https://x/{project}/{id}", {"id": "1"})


@pytest.mark.parametrize(
    ("template", "fields"),
    [("https://x/{id}", {"id"}), ("https://x/{a}/{b_2}/{a}", {"a", "b_2"}), ("https://x/", set())],
)
def test_template_fields(template: str, fields: set[str]) -> None:
    """A template's placeholders are its {name}s."""
    assert template_fields(template) == fields


@pytest.mark.parametrize(
    "template", ["https://x/{id", "https://x/id}", "https://x/{id.__class__}", "https://x/{0}"]
)
def test_stray_braces_and_format_tricks_are_refused(template: str) -> None:
    """Only {identifier} is a placeholder: attribute access, indexes and stray braces are
    refused (a template is never handed to str.format)."""
    with pytest.raises(ValueError, match="placeholders"):
        template_fields(template)
