"""``/openapi.json``: FastAPI's document, made exact for the settings the API runs under.

What FastAPI cannot know is added here: the registration body (the model every door shares),
with the installed providers and the kinds of retryable errors as enums; errors shaped as
:class:`~taskwarden.api.schemas.Error`; the ``key=value`` shape of label filters; and security
as enforced: writes always need the token, reads only with ``TASKWARDEN_API__READ_AUTH``, so
without it reads are documented as open and without a 401.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, APIRouter

from taskwarden import providers
from taskwarden.api.deps import read_auth
from taskwarden.api.routes.watches import LABEL_FILTER
from taskwarden.api.schemas import CancelRequest
from taskwarden.config import Settings
from taskwarden.lifecycle import RETRYABLE_KINDS
from taskwarden.models import Registration

REF = "#/components/schemas/{model}"
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def document(app: FastAPI, settings: Settings, routers: Iterable[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document of ``app``, whose routes come from ``routers``."""
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                         routes=app.routes)  # fmt: skip
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Registration, CancelRequest):
        body = model.model_json_schema(ref_template=REF)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    _registration(components)
    _errors_as_sent(schema)
    _parameters_not_null(schema)
    _label_filters(schema["paths"]["/v1/watches"]["get"])
    _links(schema["paths"])
    if not settings.api.read_auth:
        _reads_open(schema, routers)
    return schema


def _registration(components: dict[str, Any]) -> None:
    """The installed providers, and the error kinds a watch's retry policy may name."""
    components["Registration"]["properties"]["provider"]["enum"] = providers.names()
    kinds = components["RetryOverride"]["properties"]["non_retryable"]["anyOf"][0]
    kinds["items"] = {"type": "string", "enum": sorted(RETRYABLE_KINDS)}


def _parameters_not_null(schema: dict[str, Any]) -> None:
    """An optional parameter is left out, never null: a query string or header has no null
    (FastAPI documents ``str | None`` as "string or null", and would read "null" as a string)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                shape = param["schema"]
                kinds = shape.get("anyOf", [])
                if len(kinds) == 2 and {"type": "null"} in kinds:
                    kept = next(k for k in kinds if k != {"type": "null"})
                    rest = {k: v for k, v in shape.items() if k not in ("anyOf", "default")}
                    param["schema"] = {**kept, **rest}


def _label_filters(operation: dict[str, Any]) -> None:
    label = next(p for p in operation["parameters"] if p["name"] == "label")
    label["schema"]["items"]["pattern"] = LABEL_FILTER


def _links(paths: dict[str, Any]) -> None:
    """A registered watch's id leads to reading, cancelling and re-arming it."""
    ref = {"ref": "$response.body#/watch/id"}
    links = {
        name: {"operationId": paths[path]["post" if name != "get" else "get"]["operationId"],
               "parameters": ref}
        for name, path in (("get", "/v1/watches/{ref}"), ("cancel", "/v1/watches/{ref}/cancel"),
                           ("retry", "/v1/watches/{ref}/retry"))
    }  # fmt: skip
    for status in ("200", "201"):
        paths["/v1/watches"]["post"]["responses"][status]["links"] = links


def _reads_open(schema: dict[str, Any], routers: Iterable[APIRouter]) -> None:
    """Without READ_AUTH, reads take no token: no security, no 401."""
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            if not any(d.dependency is read_auth for d in route.dependencies):
                continue
            for method in route.methods or ():
                operation = schema["paths"][route.path][method.lower()]
                operation.pop("security", None)
                operation["responses"].pop("401", None)


def _errors_as_sent(schema: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape; ours is ``Error`` (one sentence), and a route whose
    only input is a string in its path cannot fail validation at all."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if "422" not in responses:
                continue
            params = operation.get("parameters", [])
            if "requestBody" not in operation and all(p["in"] == "path" for p in params):
                del responses["422"]
            else:
                responses["422"] = {
                    "description": "Invalid input; `detail` says what and why",
                    "content": ERROR,
                }
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
