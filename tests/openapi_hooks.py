"""Schemathesis hooks for tests/test_openapi_fuzz.py (loaded by its config file, not by pytest).

Two refusals of schema-valid input are the API's documented business, beyond what a JSON schema
can say: a provider's own rules for its targets (an EarthOne id is ``job:<id>``, an http one
names a configured profile, isahit and Descartes Labs read their params) and a ``cursor`` that
this server did not return for the same filters. *Positive* cases (the ones schemathesis expects
to be accepted) are kept clear of both: a registration goes to geobox, whose targets are any
remote id, and a listing starts at the first page. Negative cases are left as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis

ANY_TARGET = "geobox"


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    registration = case.method == "POST" and case.path == "/v1/watches"
    if registration and isinstance(case.body, dict) and isinstance(case.body.get("provider"), str):
        case.body = {**case.body, "provider": ANY_TARGET}
    if case.method == "GET" and case.path == "/v1/watches" and case.query:
        case.query = {k: v for k, v in case.query.items() if k != "cursor"}
    return case
