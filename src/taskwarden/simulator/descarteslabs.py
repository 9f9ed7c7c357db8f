"""The Descartes Labs simulator: vector copy/delete jobs and exports, storage, accounts.

Served under ``/descarteslabs`` (the SDK's ``vector_url`` is ``…/descarteslabs/vector/v2``, its
``storage_url`` ``…/descarteslabs/storage/v1``, its auth ``domain`` ``…/descarteslabs/accounts``):

    POST   accounts/token                                     refresh token → JWT
    GET    vector/v2/products/{id}                            the product
    POST   vector/v2/products/{id}/search/copy                start a copy → the new product
    GET    vector/v2/products/{new_id}/search/copy/status     copy job status
    DELETE vector/v2/products/{id}/search                     start a delete → the product
    GET    vector/v2/products/{id}/search/delete/status       delete job status
    POST   vector/v2/products/{id}/search/export              start an export → {"export_id"}
    GET    vector/v2/products/{id}/search/export              finished exports, paged
    GET    vector/v2/products/{id}/search/export/{export_id}  the result; 404 until finished
    GET    storage/v1/data/get/{key}   the exported GeoJSON    GET storage/v1/logs/get/{key}  log

Jobs and exports play scripts (:class:`DLJobSpec`, :class:`DLExportSpec`) on the simulation
clock; jobs started through the API play the ``api_*`` script of :class:`DescartesLabsConfig`.
Documents are JSON:API, errors ``{"errors": [{"title", "status", "detail"}]}``. Every API
call needs a bearer JWT from ``accounts/token`` (see :mod:`.descarteslabs_accounts`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute

from taskwarden.simulator.descarteslabs_accounts import Accounts, AccountsConfig
from taskwarden.simulator.descarteslabs_jobs import (
    SPECS,
    DLExport,
    DLExportSpec,
    DLJob,
    DLJobSpec,
    resource,
    summary,
)
from taskwarden.simulator.faults import FAULT_SCOPE_KEY, FaultBook, Stats, route_maker
from taskwarden.simulator.script import CHUNK

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

NAME = "descarteslabs"
PREFIX = "/descarteslabs"
V = "vector/v2/products/{product_id}"


class DescartesLabsConfig(AccountsConfig):
    """Auth (see :class:`AccountsConfig`), the script of API-started jobs, and paging."""

    api_pending_seconds: float = Field(0.5, ge=0)
    api_running_seconds: float = Field(2.0, ge=0)
    api_outcome: Literal["success_file", "failure", "never"] = "success_file"
    export_page_size: int = Field(100, ge=1)


class DescartesLabsSimulator:
    """Descartes Labs' state: products, jobs, exports, and the accounts service."""

    name = NAME
    prefix = PREFIX

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.accounts = Accounts(clock)
        self.config = DescartesLabsConfig()
        self.clear()

    @property
    def counters(self) -> dict[str, int]:
        """Tokens ``issued`` and ``refused`` by accounts/token, and 401s (``unauthorized``)."""
        return dict(self.accounts.counters)

    def env(self, root_url: str) -> dict[str, str]:
        """The ``TASKWARDEN_*`` settings that point taskwarden at this simulator."""
        base = f"{root_url}{PREFIX}"
        var = "TASKWARDEN_PROVIDERS__DESCARTESLABS__"
        client_id, refresh = next(iter(self.config.clients.items()))
        return {
            f"{var}VECTOR_URL": f"{base}/vector/v2",
            f"{var}STORAGE_URL": f"{base}/storage/v1",
            f"{var}ACCOUNTS_URL": f"{base}/accounts",
            f"{var}CLIENT_ID": client_id,
            f"{var}REFRESH_TOKEN": refresh,
        }

    # -- scripting -------------------------------------------------------------------------
    def add_task(self, kind: str = "copy", **fields: Any) -> DLJob | DLExport:
        """A copy, delete or export by ``kind``; ``.registration`` is what to track."""
        return self.add(SPECS.validate_python([{"kind": kind, **fields}]))[0]

    def add_copy_job(self, **fields: Any) -> DLJob:
        """A copy job into product ``product_id`` (made up when not given); clock starts now."""
        task = self.add([DLJobSpec(kind="copy", **fields)])[0]
        assert isinstance(task, DLJob)
        return task

    def add_delete_job(self, **fields: Any) -> DLJob:
        """A delete job on ``product_id`` (replacing that product's previous delete job)."""
        task = self.add([DLJobSpec(kind="delete", **fields)])[0]
        assert isinstance(task, DLJob)
        return task

    def add_export(self, **fields: Any) -> DLExport:
        """An export of ``product_id``; ``.export_id``, ``.sha256`` and ``.log_sha256`` tell
        what to register and what the archive should hold."""
        task = self.add([DLExportSpec(**fields)])[0]
        assert isinstance(task, DLExport)
        return task

    def add(self, specs: Iterable[DLJobSpec | DLExportSpec]) -> list[DLJob | DLExport]:
        """Add scripted jobs and exports (their products appear as needed); clocks start now."""
        now = self.clock.now()
        epoch = self.clock.epoch(now)
        added: list[DLJob | DLExport] = []
        for spec in specs:
            self.add_product(spec.product_id)
            if isinstance(spec, DLExportSpec):
                export = DLExport(spec, spec.seed or spec.export_id, now, epoch)
                self.exports[export.export_id] = export
                self.keys[export.key] = export
                self.logs[export.result_key] = export
                added.append(export)
            else:
                job = DLJob(spec, spec.seed or spec.job_id, now, epoch)
                (self.copies if spec.kind == "copy" else self.deletes)[spec.product_id] = job
                added.append(job)
        return added

    def add_product(self, product_id: str, **attributes: Any) -> None:
        """Make a product exist (a no-op when it does)."""
        self.products.setdefault(
            product_id,
            {"title": product_id, "description": "simulated product", "owners": [], **attributes},
        )

    def add_raw(self, items: list[Any]) -> list[dict[str, Any]]:
        """Add from JSON specs, each with ``kind`` copy, delete or export (the control API)."""
        return [summary(task) for task in self.add(SPECS.validate_python(items))]

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """An export (by export id) or job (by product id): script, document, checksums."""
        now = self.clock.now()
        if (export := self.exports.get(task_id)) is not None:
            return {
                **summary(export),
                "spec": export.script.model_dump(),
                "document": export.result(now),
            }
        job = self.copies.get(task_id) or self.deletes.get(task_id)
        if job is None:
            return None
        return {**summary(job), "spec": job.script.model_dump(), "document": job.document(now)}

    def clear(self) -> None:
        """Forget every product, job and export (tokens issued stay valid)."""
        self.products: dict[str, dict[str, Any]] = {}
        self.copies: dict[str, DLJob] = {}  # new product id → its copy job
        self.deletes: dict[str, DLJob] = {}  # product id → its latest delete job
        self.exports: dict[str, DLExport] = {}
        self.keys: dict[str, DLExport] = {}  # storage data key → export
        self.logs: dict[str, DLExport] = {}  # storage log key → export
        self.accounts.counters.clear()
        self.accounts.requests = []

    def configure(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change some :class:`DescartesLabsConfig` settings; raises ``ValidationError``."""
        self.config = DescartesLabsConfig.model_validate({**self.config.model_dump(), **settings})
        self.accounts.config = self.config
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self, faults: FaultBook, stats: Stats) -> list[BaseRoute]:
        """The platform's routes, counted and fault-injectable, relative to ``prefix``."""

        route = route_maker(NAME, faults, stats, error)

        product, word = _param("product_id"), frozenset({"unknown_status"})
        return [
            route("POST", "accounts/token", self.accounts.token),
            route("GET", V, self._product, task_of=product),
            route("POST", f"{V}/search/copy", self._start_copy, task_of=product),
            route("GET", f"{V}/search/copy/status", self._job("copy"), task_of=product, kinds=word),
            route("DELETE", f"{V}/search", self._start_delete, task_of=product),
            route(
                "GET", f"{V}/search/delete/status", self._job("delete"), task_of=product, kinds=word
            ),
            route("POST", f"{V}/search/export", self._start_export, task_of=product),
            route("GET", f"{V}/search/export", self._list_exports, task_of=product),
            route(
                "GET",
                f"{V}/search/export/{{export_id}}",
                self._export,
                task_of=_param("export_id"),
                kinds=word,
            ),
            route(
                "GET",
                "storage/v1/data/get/{key:path}",
                self._data,
                task_of=self._owner("keys"),
                json=False,
            ),
            route(
                "GET",
                "storage/v1/logs/get/{key:path}",
                self._log,
                task_of=self._owner("logs"),
                json=False,
            ),
        ]

    def _owner(self, index: str) -> Any:
        def task_of(params: Mapping[str, Any]) -> str | None:
            exports: dict[str, DLExport] = getattr(self, index)  # clear() replaces the index
            export = exports.get(params.get("key", ""))
            return export.export_id if export is not None else None

        return task_of

    def _denied(self, request: Request) -> Response | None:
        reason = self.accounts.refusal(request)
        if reason is None:
            return None
        self.accounts.counters["unauthorized"] += 1
        return error(401, reason)

    async def _product(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        product_id = request.path_params["product_id"]
        if product_id not in self.products:
            return error(404, f"Product {product_id} not found")
        return JSONResponse(resource(product_id, "product", self.products[product_id]))

    async def _start_copy(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        wanted = body.get("product")
        if not isinstance(wanted, dict) or not all(
            isinstance(wanted.get(f), str) and wanted.get(f) for f in ("id", "title", "description")
        ):
            return error(400, "product.id, product.title and product.description are required")
        new_id = wanted["id"]
        if ":" not in new_id:  # the service prefixes the caller's namespace
            new_id = f"{self.accounts.namespace(request)}:{new_id}"
        if new_id in self.products:
            return error(400, f"Product id {new_id} is already in use")
        job = self.add([DLJobSpec(kind="copy", product_id=new_id, **self._api_script())])[0]
        self.products[new_id] |= {"title": wanted["title"], "description": wanted["description"]}
        return JSONResponse(resource(job.product_id, "product", self.products[new_id]))

    async def _start_delete(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        product_id = request.path_params["product_id"]
        self.add([DLJobSpec(kind="delete", product_id=product_id, **self._api_script())])
        return JSONResponse(resource(product_id, "product", self.products[product_id]))

    async def _start_export(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        key = body.get("key")
        if not isinstance(key, str) or not key:
            return error(400, "key is required")
        spec = DLExportSpec(
            product_id=request.path_params["product_id"], key=key, **self._api_script()
        )
        export = self.add([spec])[0]
        assert isinstance(export, DLExport)
        return JSONResponse({"export_id": export.export_id})

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        """The JSON body of a job-starting call on an existing product, or the refusal."""
        if (denied := self._denied(request)) is not None:
            return denied
        if request.path_params["product_id"] not in self.products:
            return error(404, f"Product {request.path_params['product_id']} not found")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return error(400, "The body is not JSON")
        return body if isinstance(body, dict) else error(400, "The body must be a JSON object")

    def _api_script(self) -> dict[str, Any]:
        config = self.config
        return {
            "pending_seconds": config.api_pending_seconds,
            "outcome": config.api_outcome,
            "running_seconds": config.api_running_seconds,
        }

    def _job(self, kind: str) -> Any:
        async def status(request: Request) -> Response:
            if (denied := self._denied(request)) is not None:
                return denied
            jobs = self.copies if kind == "copy" else self.deletes  # clear() replaces them
            job = jobs.get(request.path_params["product_id"])
            if job is None:
                return error(404, f"No {kind} job found for this product")
            return JSONResponse(job.document(self.clock.now(), _word(request)))

        return status

    async def _export(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        export = self.exports.get(request.path_params["export_id"])
        if export is None or export.product_id != request.path_params["product_id"]:
            return error(404, "Export not found")
        result = export.result(self.clock.now(), _word(request))
        return JSONResponse(result) if result is not None else error(404, "Export not found")

    async def _list_exports(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        product_id = request.path_params["product_id"]
        if product_id not in self.products:
            return error(404, f"Product {product_id} not found")
        now = self.clock.now()
        done = [
            r
            for e in list(self.exports.values())
            if e.product_id == product_id and (r := e.result(now)) is not None
        ]
        token = request.query_params.get("continuation_token") or "0"
        start = int(token) if token.isdigit() else 0
        end = start + self.config.export_page_size
        page = [r["data"] for r in done[start:end]]
        more = str(end) if end < len(done) else None
        return JSONResponse({"data": page, "meta": {"continuation_token": more}})

    async def _data(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        export = self.keys.get(request.path_params["key"])
        if export is None or not export.script.stored:
            return error(404, "Object not found")
        if export.phase(self.clock.now())[0] != "succeeded":
            return error(404, "Object not found")
        return _stream(export.data, "application/octet-stream")

    async def _log(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        export = self.logs.get(request.path_params["key"])
        if export is None or export.result(self.clock.now()) is None:
            return error(404, "Object not found")
        return _stream(export.log, "text/plain; charset=utf-8")


def error(status: int, detail: str) -> Response:
    """A JSON:API error response: ``{"errors": [{"title", "status", "detail"}]}``."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"errors": [{"title": title, "status": str(status), "detail": detail}]}
    return JSONResponse(body, status, headers)


def _stream(body: bytes, media_type: str) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), CHUNK):
            yield body[start : start + CHUNK]

    headers = {"Content-Length": str(len(body))}
    return StreamingResponse(chunks(), 200, headers, media_type)


def _param(name: str) -> Any:
    def task_of(params: Mapping[str, Any]) -> str | None:
        value = params.get(name)
        return value if isinstance(value, str) else None

    return task_of


def _word(request: Request) -> str | None:
    fault = request.scope.get(FAULT_SCOPE_KEY)
    return fault.word if fault is not None and fault.kind == "unknown_status" else None
