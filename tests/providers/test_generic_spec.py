"""What a generic profile makes of a status document (pure: no HTTP), table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskwarden.config.providers import GenericHttpSettings, GenericProfile
from taskwarden.errors import OutputInvalid, ProviderUnavailable
from taskwarden.lifecycle import Remote
from taskwarden.providers.generic.spec import (
    Link,
    Spec,
    host_allowed,
    observe,
    output_links,
    progress_fraction,
)

STATES = {
    "pending": ["queued", "waiting"],
    "running": ["in_progress"],
    "succeeded": ["completed"],
    "failed": ["errored", "500"],
    "cancelled": ["canceled"],
}
BASE = "https://api.acme.test/v2/jobs/42"


def spec(**fields: Any) -> Spec:
    profile: dict[str, Any] = {
        "status_url": "https://api.acme.test/v2/jobs/{id}",
        "status_path": "state",
        "states": STATES,
        "progress_path": "progress",
        "error_path": "error",
        "name_path": "title",
        "outputs_path": "outputs",
        **fields,
    }
    return Spec.compile("acme", GenericProfile.model_validate(profile))


@pytest.mark.parametrize(
    ("state", "remote", "raw"),
    [
        ("queued", Remote.PENDING, "queued"),
        ("WAITING", Remote.PENDING, "WAITING"),  # words match case-insensitively, kept as sent
        ("in_progress", Remote.RUNNING, "in_progress"),
        ("Completed", Remote.SUCCEEDED, "Completed"),
        ("errored", Remote.FAILED, "errored"),
        (500, Remote.FAILED, "500"),  # a number is its JSON text
        ("canceled", Remote.CANCELLED, "canceled"),
        ("paused", Remote.UNKNOWN, "paused"),
        (None, Remote.UNKNOWN, "null"),
        (True, Remote.UNKNOWN, "true"),
    ],
)
def test_words_map_onto_the_canonical_lifecycle(state: Any, remote: Remote, raw: str) -> None:
    """Each configured word maps to its state; anything else is UNKNOWN, kept raw."""
    seen = observe(spec(), {"state": state, "title": "ndvi"})
    assert (seen.remote, seen.raw_status, seen.name) == (remote, raw, "ndvi")


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"status": "completed"}, "no status at 'state'"),
        ({"state": {"name": "completed"}}, "is a JSON object, not a word"),
        ({"state": ["completed"]}, "is a JSON array"),
        ([1, 2], "no status"),
    ],
)
def test_a_document_without_a_status_word_is_retryable(document: Any, match: str) -> None:
    """No word where the profile says is ProviderUnavailable naming the profile and path."""
    with pytest.raises(ProviderUnavailable, match=match) as caught:
        observe(spec(), document)
    assert "acme" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "document", "progress"),
    [
        ({}, {"progress": 40}, 0.4),  # percent by default
        ({}, {"progress": "62.5%"}, 0.625),
        ({}, {"progress": " 10 "}, 0.1),
        ({"progress_max": 1}, {"progress": 0.25}, 0.25),  # a fraction
        ({"progress_total_path": "steps.total"}, {"progress": 3, "steps": {"total": 12}}, 0.25),
        ({"progress_total_path": "steps.total"}, {"progress": 30, "steps": {"total": 0}}, 0.3),
        ({}, {"progress": 250}, 1.0),  # clamped
        ({}, {"progress": -3}, 0.0),
        ({}, {"progress": True}, None),  # not a number
        ({}, {"progress": "soon"}, None),
        ({}, {"progress": None}, None),
        ({}, {}, None),
        ({"progress_path": None}, {"progress": 50}, None),
    ],
)
def test_progress_while_running(
    fields: dict[str, Any], document: dict[str, Any], progress: float | None
) -> None:
    """Progress is the value over its total (the document's, else progress_max), clamped."""
    seen = observe(spec(**fields), {"state": "in_progress", **document})
    assert seen.progress == (None if progress is None else pytest.approx(progress))


@pytest.mark.parametrize("state", ["queued", "completed", "errored", "paused"])
def test_progress_is_reported_only_while_running(state: str) -> None:
    """A progress field outside the running words is not reported."""
    assert observe(spec(), {"state": state, "progress": 50}).progress is None


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("Out of memory", "Out of memory"),
        ("  two\n  lines ", "two lines"),
        ({"code": "E42", "message": "band 4 missing"}, "band 4 missing"),
        ([{"msg": "a"}, "b"], "a; b"),
        ({"code": "E42"}, '{"code": "E42"}'),
        (42, "42"),
        (None, None),
        ("", None),
        ([], None),
    ],
)
def test_failure_message_from_the_error_path(error: Any, message: str | None) -> None:
    """A failed job's message is whatever sits at error_path, as one line."""
    seen = observe(spec(), {"state": "errored", "error": error})
    assert (seen.remote, seen.message) == (Remote.FAILED, message)


def test_a_long_error_is_cut_to_one_line() -> None:
    """An error of any size becomes a message of at most 300 characters."""
    seen = observe(spec(), {"state": "errored", "error": "x" * 5000})
    assert seen.message is not None and len(seen.message) == 300


@pytest.mark.parametrize(
    ("state", "fail_on_error", "remote", "message"),
    [
        ("completed", False, Remote.SUCCEEDED, None),
        ("completed", True, Remote.FAILED, "2 features rejected"),
        ("canceled", False, Remote.CANCELLED, "2 features rejected"),
        ("in_progress", True, Remote.RUNNING, None),
    ],
)
def test_fail_on_error_turns_a_success_with_errors_into_a_failure(
    state: str, fail_on_error: bool, remote: Remote, message: str | None
) -> None:
    """With fail_on_error an error beside a success word fails the job (a "DONE with errors")."""
    seen = observe(
        spec(fail_on_error=fail_on_error), {"state": state, "error": "2 features rejected"}
    )
    assert (seen.remote, seen.message) == (remote, message)


@pytest.mark.parametrize(
    ("fields", "outputs", "links"),
    [
        ({}, ["https://cdn.test/a.tif"], [Link("https://cdn.test/a.tif", None)]),
        ({}, "https://cdn.test/a.tif", [Link("https://cdn.test/a.tif", None)]),  # just one
        ({}, [{"url": "/files/a.tif", "name": "A.tif"}], [Link("https://api.acme.test/files/a.tif", "A.tif")]),
        ({}, [{"url": "42/files/a"}], [Link("https://api.acme.test/v2/jobs/42/files/a", None)]),
        ({"output_url_path": "links.self", "output_name_path": "/meta/file name"},
         [{"links": {"self": "https://s.test/x?sig=1"}, "meta": {"file name": "x.csv"}}],
         [Link("https://s.test/x?sig=1", "x.csv")]),
        ({}, [{"url": "https://s.test/x", "name": "../../etc/passwd"}], [Link("https://s.test/x", "passwd")]),
        ({}, [{"url": "https://s.test/x", "name": 7}], [Link("https://s.test/x", None)]),
        ({}, [], []),
        ({}, None, []),
        ({"outputs_path": "nowhere"}, ["https://s.test/x"], []),
        ({"outputs_path": None}, ["https://s.test/x"], []),
        ({"output_hosts": ["*.cdn.test", "api.acme.test"]},
         ["https://eu.cdn.test/a", "/b"],
         [Link("https://eu.cdn.test/a", None), Link("https://api.acme.test/b", None)]),
    ],
)  # fmt: skip
def test_output_links(fields: dict[str, Any], outputs: Any, links: list[Link]) -> None:
    """Outputs are URL strings or objects (url and name by their own paths), resolved against
    the status URL; no list, or an empty one, is no outputs."""
    assert output_links(spec(**fields), {"outputs": outputs}, BASE) == links


@pytest.mark.parametrize(
    ("fields", "outputs", "match"),
    [
        ({}, [{"href": "https://s.test/x"}], "output 0 at 'outputs' has no URL at 'url'"),
        ({}, ["https://s.test/x", 5], "output 1 at 'outputs' is neither"),
        ({}, ["file:///etc/passwd"], "not an http"),
        ({}, ["ftp://s.test/x"], "not an http"),
        ({}, ["http://[::1/x"], "malformed URL"),
        ({}, ["http://s.test:99999/x"], "not an http"),  # not taken for the default port
        ({"output_hosts": ["cdn.test"]}, ["https://169.254.169.254/latest"], "not in output_hosts"),
        ({"output_hosts": ["*.cdn.test"]}, ["https://cdn.test.evil/x"], "not in output_hosts"),
    ],
)
def test_unusable_outputs_are_output_invalid(
    fields: dict[str, Any], outputs: Any, match: str
) -> None:
    """An entry without a URL, a non-http URL or a host outside output_hosts is refused."""
    with pytest.raises(OutputInvalid, match=match):
        output_links(spec(**fields), {"outputs": outputs}, BASE)


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("x.test", [], True),
        ("x.test", ["x.test"], True),
        ("X.Test.", ["x.test"], True),
        ("a.x.test", ["*.x.test"], True),
        ("x.test", ["*.x.test"], False),
        ("evilx.test", ["*.x.test"], False),
        ("y.test", ["x.test"], False),
    ],
)
def test_host_allow_list(host: str, allowed: list[str], ok: bool) -> None:
    """output_hosts names hosts exactly or by '*.' suffix; empty allows any."""
    assert host_allowed(host, allowed) is ok


@pytest.mark.parametrize(
    ("value", "total", "maximum", "expected"),
    [(5, None, 10, 0.5), (5, 20, 10, 0.25), (5, -1, 10, 0.5), ("50%", None, 100, 0.5),
     (float("nan"), None, 100, None), ("inf", None, 100, None), (False, None, 1, None)],
)  # fmt: skip
def test_progress_fraction(value: Any, total: Any, maximum: float, expected: float | None) -> None:
    """Numbers and numeric strings count; NaN, infinity and booleans do not."""
    assert progress_fraction(value, total, maximum) == expected


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"status_url": "https://x/jobs"}, "placeholder"),
        ({"status_url": "file:///x/{id}"}, "http"),
        ({"status_url": "https://x/{id}/{a.b}"}, "placeholders"),
        ({"status_path": "a..b"}, "empty segment"),
        ({"outputs_path": "/a~9"}, "escape|followed"),
        ({"states": {"running": ["r"]}}, "succeeded, failed or cancelled"),
        ({"states": {"succeeded": ["Done"], "failed": ["DONE"]}}, "both"),
        ({"states": {"succeeded": ["done"], "paused": ["p"]}}, "states"),
        ({"progress_max": 0}, "greater than 0"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(fields: dict[str, Any], match: str) -> None:
    """A profile that could never work is refused when settings load, saying why."""
    profile = {"status_url": "https://x/{id}", "status_path": "s", "states": STATES, **fields}
    with pytest.raises(ValidationError, match=match):
        GenericProfile.model_validate(profile)


@pytest.mark.parametrize("name", ["a:b", "", "a/b", "-x", "x" * 65])
def test_profile_names_are_safe(name: str) -> None:
    """A profile name is the first part of remote ids: no ':', no '/', not empty."""
    profile = {"status_url": "https://x/{id}", "status_path": "s", "states": STATES}
    with pytest.raises(ValidationError, match="profile name"):
        GenericHttpSettings.model_validate({"profiles": {name: profile}})
