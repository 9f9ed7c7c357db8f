"""The records: a registration's ``archive`` field as every door validates it, and the watch
record's archive mode, outcome and platform facts as the store writes and reads them back (on a
real Redis), including records an older taskwarden wrote."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from taskwarden import keys
from taskwarden.errors import InvalidRegistration
from taskwarden.lifecycle import Decision, Observation, Remote, State
from taskwarden.models import FIELDS, MAX_DETAILS_BYTES, Registration, observed_fields, watch_id
from taskwarden.store import Commit, Store

NOW = 1_700_000_000.0
KNOWN = ["geobox", "up42"]


def parse(**fields: Any) -> Registration:
    return Registration.parse({"provider": "geobox", "remote_id": "t1", **fields}, KNOWN)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("success", "success"), ("final", "final"), (False, False), (True, "success")],
)
def test_archive_takes_success_final_or_false_and_true_as_success(given: Any, kept: Any) -> None:
    """The three modes are kept as given; true, what producers sent when the field was a
    boolean, is "success"."""
    assert parse(archive=given).archive == kept


def test_archive_defaults_to_success() -> None:
    """A registration that does not say archives the outputs of a success, as before."""
    assert parse().archive == "success"


@pytest.mark.parametrize("given", ["none", "true", "Final", "", 0, 1, None, ["final"], {}])
def test_archive_refuses_anything_else_saying_what_it_takes(given: Any) -> None:
    """Anything but "success", "final", false or true is refused at registration, naming the
    field and what it takes (0 and 1 are not booleans here)."""
    with pytest.raises(InvalidRegistration) as caught:
        parse(archive=given)
    assert 'archive: Value error, must be "success", "final" or false' in str(caught.value)


def test_the_api_schema_documents_true_beside_the_three_modes() -> None:
    """The registration's JSON schema lists every value accepted, the old true included."""
    schema = Registration.model_json_schema()["properties"]["archive"]
    assert schema["enum"] == ["success", "final", False, True] and schema["default"] == "success"


@pytest.mark.parametrize(
    ("stored", "mode"), [("1", "success"), ("0", False), (None, "success"), ("final", "final")]
)
def test_an_older_record_reads_its_boolean_archive_as_a_mode(
    store: Store, stored: str | None, mode: Any
) -> None:
    """A watch written when ``archive`` was "1"/"0" (or absent) reads as "success"/false."""
    watch, _ = store.register(Registration(provider="geobox", remote_id="old"), NOW)
    if stored is None:
        store.redis.hdel(keys.watch(watch.id), "archive")
    else:
        store.redis.hset(keys.watch(watch.id), "archive", stored)
    again = store.get(watch.id)
    assert again is not None and again.archive == mode


def test_observed_fields_keep_finite_times_and_small_details() -> None:
    """Times the platform gave (finite ones) and its details are what a check records; a check
    that reports none records none."""
    seen = Observation(Remote.RUNNING, "R", remote_created_at=1.5, remote_started_at=math.nan,
                       details={"exit_code": 3, "reason": "KeyError: 'b04'"})  # fmt: skip
    assert observed_fields(seen) == {
        FIELDS["remote_created_at"]: 1.5,
        FIELDS["details"]: {"exit_code": 3, "reason": "KeyError: 'b04'"},
    }
    assert observed_fields(Observation(Remote.RUNNING, "R")) == {}


@pytest.mark.parametrize(
    ("details", "why"),
    [({"log": "x" * MAX_DETAILS_BYTES}, "over the 2048 kept"), ({"n": math.inf}, "not JSON"),
     ({"when": object()}, "not JSON")],
)  # fmt: skip
def test_details_too_big_or_not_json_leave_a_marker(details: dict[str, Any], why: str) -> None:
    """A provider's details that would bloat the record, or could not be shown, are replaced by
    one line saying so rather than stored or failing the check."""
    fields = observed_fields(Observation(Remote.RUNNING, "R", details=details))
    assert why in fields[FIELDS["details"]]["dropped"]  # type: ignore[index]


def test_the_store_keeps_outcome_times_and_details_with_the_commit(store: Store) -> None:
    """A commit's outcome and observed fields are on the watch read back; a later check without
    details keeps the last ones; a re-arm forgets the outcome (its next end decides its own)."""
    watch, _ = store.register(Registration(provider="geobox", remote_id="r", archive="final"), NOW)
    seen = Observation(Remote.FAILED, "failure", remote_created_at=NOW - 60,
                       remote_ended_at=NOW - 1, details={"exit_code": 2})  # fmt: skip
    (claim,) = store.claim_due("geobox", NOW, 1, lease_until=NOW + 30)
    archiving = Decision(State.ARCHIVING, "failure", None, None, 0, None, outcome=State.FAILED)
    assert store.commit(Commit(claim, archiving, NOW, extra=observed_fields(seen)))
    got = store.get(watch.id)
    assert got is not None
    assert (got.archive, got.outcome, got.details) == ("final", State.FAILED, {"exit_code": 2})
    assert (got.remote_created_at, got.remote_started_at, got.remote_ended_at) == (
        NOW - 60, None, NOW - 1
    )  # fmt: skip
    assert got.to_dict()["outcome"] == "failed" and json.dumps(got.to_dict())

    store.redis.hset(keys.watch(watch.id), "state", "timed_out")  # as a time-out would leave it
    again = store.rearm(watch.id, NOW + 10)
    assert again is not None and again.outcome is None and again.details == {"exit_code": 2}
    assert store.get(watch_id("geobox", "r")) == again and again.fence == claim.fence + 1
