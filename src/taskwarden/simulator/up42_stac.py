"""The HTTP handlers of the UP42 simulator's v2 API: processing jobs, the STAC API of their
results (pystac-client 0.7 as up42-py 4.3 drives it), and asset downloads by signed URL.

    GET  v2/processing/jobs[?workspaceId&processId&status&limit&page]   {"jobs", "links"}:
                                         the next link's href is relative (4.3 prepends
                                         host.endpoint, processing.py:238-241)
    GET  v2/processing/jobs/{id}         a processing job
    GET  v2/assets/stac/                 the landing page (core, collections, item-search,
                                         ogcapi-features)
    GET  v2/assets/stac/collections[/{id}]               delivered collections
    GET  v2/assets/stac/collections/{id}/items[?limit&token]   a FeatureCollection page; an
                                         absolute rel=next href while items remain
    GET  v2/assets/stac/collections/{id}/items/{item}    one item
    GET|POST v2/assets/stac/search       ids, collections, limit, token (no filter)
    POST v2/assets/{asset}/download-url  {"url": <signed URL, url_ttl seconds>}
    GET  v2/assets/{asset}               the bytes, with the bearer (UP42's docs)
    GET  signed-assets/{asset}/{object}  the bytes, no Authorization; 400 ExpiredToken once
                                         expired, 403 with a bad signature

A ``limit`` outside 1-10000 or an unknown ``token`` is a 400 problem document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from taskwarden.simulator.up42_http import (
    STAC,
    base_url,
    disposition,
    expired,
    fault_word,
    problem,
    signed_refusal,
    storage_base,
    storage_error,
)
from taskwarden.simulator.up42_processing import Asset, Up42Processing
from taskwarden.simulator.up42_state import Up42World

RouteMaker = Callable[..., Route]
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
]
MAX_LIMIT = 10_000
GEOJSON = "application/geo+json"


def build(sim: Up42World, route: RouteMaker) -> list[BaseRoute]:
    """The v2 routes, as ``route(method, path, handler, **options)`` makes them."""

    def id_of(params: Mapping[str, Any]) -> str | None:
        value = params.get("id") or params.get("asset")
        return value if isinstance(value, str) else None

    def delivered(request: Request) -> Up42Processing | Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        wanted = request.path_params["id"]
        job = sim.collection_job(wanted)
        return problem(404, f"Collection {wanted} not found") if job is None else job

    def asset_of(request: Request) -> Asset | Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        asset = sim.assets.get(request.path_params["asset"])
        if asset is None or asset.spec.href is not None or not asset.job.delivered(now()):
            return problem(404, f"Asset {request.path_params['asset']} not found")
        return asset

    def now() -> float:
        return sim.clock.now()

    async def processing(request: Request) -> Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        job = sim.processing.get(request.path_params["id"])
        if job is None:
            return problem(404, f"Job {request.path_params['id']} not found")
        return JSONResponse(job.document(now(), base_url(request), fault_word(request)))

    async def processing_list(request: Request) -> Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        query = request.query_params
        limit, page = _int(query.get("limit", "10")), _int(query.get("page", "0"))
        if limit is None or not 1 <= limit <= MAX_LIMIT or page is None or page < 0:
            return problem(400, "limit must be 1-10000 and page a number from 0")
        statuses = set(query.get("status", "").split(",")) - {""}
        processes = set(query.get("processId", "").split(",")) - {""}
        jobs = [
            job.document(now(), base_url(request))
            for job in list(sim.processing.values())
            if query.get("workspaceId", job.spec.workspace_id) == job.spec.workspace_id
            and (not processes or job.spec.process_id in processes)
            and (not statuses or job.word(now()) in statuses)
        ]
        links = []
        if (page + 1) * limit < len(jobs):
            rest = {k: v for k, v in query.items() if k != "page"} | {"page": str(page + 1)}
            href = "/v2/processing/jobs?" + "&".join(f"{k}={v}" for k, v in rest.items())
            links.append({"rel": "next", "href": href})
        return JSONResponse({"jobs": jobs[page * limit : (page + 1) * limit], "links": links})

    async def landing(request: Request) -> Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        root = f"{base_url(request)}/{STAC}"
        return JSONResponse(
            {
                "type": "Catalog",
                "id": "up42-storage",
                "stac_version": "1.0.0",
                "description": "UP42 storage (simulated)",
                "conformsTo": CONFORMANCE,
                "links": [
                    {"rel": "self", "href": f"{root}/", "type": "application/json"},
                    {"rel": "root", "href": f"{root}/", "type": "application/json"},
                    {"rel": "data", "href": f"{root}/collections", "type": "application/json"},
                    {"rel": "search", "href": f"{root}/search", "type": GEOJSON},
                ],
            }
        )

    async def collections(request: Request) -> Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        base = base_url(request)
        found = [j.collection(base) for j in list(sim.processing.values()) if j.delivered(now())]
        links = [{"rel": "self", "href": f"{base}/{STAC}/collections"}]
        return JSONResponse({"collections": found, "links": links})

    async def collection(request: Request) -> Response:
        job = delivered(request)
        if isinstance(job, Response):
            return job
        return JSONResponse(job.collection(base_url(request)))

    async def items(request: Request) -> Response:
        job = delivered(request)
        if isinstance(job, Response):
            return job
        base = base_url(request)
        found = [(job, item) for item in job.spec.items]
        return page_of(request, found, base, job.spec.page_size, dict(request.query_params))

    async def item(request: Request) -> Response:
        job = delivered(request)
        if isinstance(job, Response):
            return job
        for spec in job.spec.items:
            if spec.id == request.path_params["item"]:
                return JSONResponse(job.item(spec, base_url(request)), media_type=GEOJSON)
        return problem(404, f"Item {request.path_params['item']} not found")

    async def search(request: Request) -> Response:
        if (denied := sim.tokens.denied(request, v2=True)) is not None:
            return denied
        if request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return problem(400, "the search body is not JSON")
            params = body if isinstance(body, dict) else {}
        else:
            params = {k: v.split(",") if k in ("ids", "collections") else v
                      for k, v in request.query_params.items()}  # fmt: skip
        ids, wanted = set(params.get("ids") or []), set(params.get("collections") or [])
        found = [
            (job, spec)
            for job in list(sim.processing.values())
            if job.delivered(now()) and (not wanted or job.spec.collection_id in wanted)
            for spec in job.spec.items
            if not ids or spec.id in ids
        ]
        return page_of(request, found, base_url(request), 10, params)

    def page_of(
        request: Request,
        found: list[tuple[Up42Processing, Any]],
        base: str,
        size: int,
        params: dict[str, Any],
    ) -> Response:
        """One page of items; the next page's link repeats the request with a new token."""
        limit = _int(str(params.get("limit", size)))
        start = 0 if "token" not in params else _token(str(params["token"]))
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            return problem(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        if start is None or start > len(found):
            return problem(400, f"invalid paging token {params.get('token')!r}")
        features = [job.item(spec, base) for job, spec in found[start : start + limit]]
        links: list[dict[str, Any]] = [{"rel": "root", "href": f"{base}/{STAC}/"}]
        if start + limit < len(found):
            token = f"next:{start + limit}"
            if request.method == "POST":
                links.append({"rel": "next", "href": str(request.url), "method": "POST",
                              "body": {**params, "token": token}})  # fmt: skip
            else:
                href = str(request.url.include_query_params(token=token))
                links.append({"rel": "next", "href": href, "type": GEOJSON})
        body = {"type": "FeatureCollection", "features": features, "links": links,
                "numberMatched": len(found), "numberReturned": len(features)}  # fmt: skip
        return JSONResponse(body, media_type=GEOJSON)

    async def download_url(request: Request) -> Response:
        asset = asset_of(request)
        if isinstance(asset, Response):
            return asset
        base = storage_base(request, sim.auth.storage_host)
        path = f"signed-assets/{asset.spec.id}/{asset.spec.key}{asset.spec.suffix}"
        extra = disposition(asset.filename) if asset.spec.disposition else {}
        url = sim.signer.sign(base, path, now() + asset.job.spec.url_ttl, extra)
        return JSONResponse({"url": url})

    async def asset_bytes(request: Request) -> Response:
        if request.path_params["asset"] == "stac":
            return await landing(request)  # the landing page without its slash
        asset = asset_of(request)
        if isinstance(asset, Response):
            return asset
        return Response(asset.content(), media_type=asset.spec.media_type.split(";")[0])

    async def signed(request: Request) -> Response:
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        path = path[path.index("signed-assets/") :]
        if not sim.signer.valid(path, request.query_params):
            return storage_error(403, "SignatureDoesNotMatch", "Invalid signature.")
        if (refused := signed_refusal(request, path)) is not None:
            return refused
        asset = sim.assets.get(request.path_params["asset"])
        if asset is None:
            return storage_error(404, "NoSuchKey", "The specified key does not exist.")
        asset.job.downloads += 1
        expires = float(request.query_params["expires"])
        if asset.job.downloads <= asset.job.spec.expired_downloads or expires <= now():
            return expired(path)
        return Response(asset.content(), media_type=asset.spec.media_type.split(";")[0])

    status = frozenset({"unknown_status"})
    quiet = {"json": False, "error": problem}
    v2 = {"error": problem}
    return [
        route("GET", "v2/processing/jobs", processing_list, **v2),
        route("GET", "v2/processing/jobs/{id}", processing, task_of=id_of, kinds=status, **v2),
        route("GET", f"{STAC}/", landing, **v2),
        route("GET", f"{STAC}/collections", collections, **v2),
        route("GET", f"{STAC}/collections/{{id}}", collection, task_of=id_of, **v2),
        route("GET", f"{STAC}/collections/{{id}}/items", items, task_of=id_of, **v2),
        route("GET", f"{STAC}/collections/{{id}}/items/{{item}}", item, task_of=id_of, **v2),
        route("GET", f"{STAC}/search", search, **v2),
        route("POST", f"{STAC}/search", search, **v2),
        route("POST", "v2/assets/{asset}/download-url", download_url, task_of=id_of, **v2),
        route("GET", "v2/assets/{asset}", asset_bytes, task_of=id_of, **quiet),
        route("GET", "signed-assets/{asset}/{object}", signed, task_of=id_of, **quiet),
    ]


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _token(value: str) -> int | None:
    kind, _, offset = value.partition(":")
    number = _int(offset) if kind == "next" else None
    return number if number is not None and number >= 0 else None
