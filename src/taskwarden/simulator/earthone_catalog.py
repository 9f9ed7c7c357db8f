"""EarthOne's catalog storage, simulated: job results as blobs, downloaded through signed URLs.

    GET metadata/v1/catalog/v2/storage/{blob id}            a Blob (JSON:API ``storage``)
    GET metadata/v1/catalog/v2/storage/download/{blob id}   ``storage_download``: a signed URL
    GET signed/{blob id}?expires=…&signature=…              the bytes, as cloud storage serves them

A job's result is the blob ``compute/{function namespace}/{function id}/{job id}``
(``core/catalog/blob.py``, ``blob_download.py``); the SDK quotes the id (``:`` as ``%3A``). The
catalog needs the bearer token; the signed URL needs none and, as cloud storage, refuses one.
Signed URLs expire ``signed_url_ttl`` seconds after they were handed out, on the simulation
clock, and name ``storage_host`` when one is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from taskwarden.simulator.earthone_iam import EarthOneConfig, Iam
from taskwarden.simulator.earthone_jobs import EOJob, iso
from taskwarden.simulator.script import CHUNK

if TYPE_CHECKING:
    from taskwarden.simulator.clock import SimClock

K = "metadata/v1/catalog/v2/storage"
JSON_API = "application/vnd.api+json"


class Catalog:
    """The blobs of the jobs ``result_of`` finds, behind the ``iam``'s tokens."""

    def __init__(
        self,
        clock: SimClock,
        iam: Iam,
        result_of: Callable[[str], EOJob | None],
        prefix: str,
    ) -> None:
        self.clock, self.iam, self.result_of, self.prefix = clock, iam, result_of, prefix
        self._secret = secrets.token_bytes(32)

    @property
    def config(self) -> EarthOneConfig:
        return self.iam.config

    def routes(self, route: Callable[..., Route]) -> list[BaseRoute]:
        """The catalog's routes, made by the platform's ``route`` maker (counted, faultable)."""
        blob = _blob_task
        return [
            route("GET", f"{K}/download/{{blob_id:path}}", self._download, task_of=blob,
                  error=catalog_error),
            route("GET", f"{K}/{{blob_id:path}}", self._blob, task_of=blob, error=catalog_error),
            route("GET", "signed/{blob_id:path}", self._signed, task_of=blob, json=False,
                  error=storage_error),
        ]  # fmt: skip

    def _denied(self, request: Request) -> Response | None:
        reason = self.iam.refusal(request)
        if reason is None:
            return None
        self.iam.counters["unauthorized"] += 1
        return catalog_error(401, reason)

    async def _blob(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        blob_id = request.path_params["blob_id"]
        job = self.result_of(blob_id)
        if job is None:
            return catalog_error(404, f"Object {blob_id} not found")
        namespace = blob_id.split("/")[1]
        ended = self._wall()
        attributes = {
            "namespace": namespace, "name": f"{job.function_id}/{job.job_id}",
            "storage_type": "compute", "storage_state": "available", "description": None,
            "geometry": None, "expires": None, "href": None, "size_bytes": len(job.result()),
            "hash": job.result_md5, "created": iso(ended), "modified": iso(ended), "tags": [],
            "extra_properties": {}, "readers": [], "writers": [],
            "owners": [f"user:{self.config.userid}"],
        }  # fmt: skip
        body = {"data": {"id": blob_id, "type": "storage", "attributes": attributes}}
        return JSONResponse(body, media_type=JSON_API)

    async def _download(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        blob_id = request.path_params["blob_id"]
        if self.result_of(blob_id) is None:
            return catalog_error(404, f"Object {blob_id} not found")
        expires = int(self._wall() + self.config.signed_url_ttl)
        url, host = request.url, self.config.storage_host
        netloc = url.netloc if host is None else (f"{host}:{url.port}" if url.port else host)
        signed = (
            f"{url.scheme}://{netloc}{self.prefix}/signed/{quote(blob_id)}"
            f"?expires={expires}&signature={self._sign(blob_id, expires)}"
        )
        body = {"data": {"id": blob_id, "type": "storage_download",
                         "attributes": {"resumable_url": signed}}}  # fmt: skip
        return JSONResponse(body, media_type=JSON_API)

    async def _signed(self, request: Request) -> Response:
        if "authorization" in request.headers:  # as cloud storage: one auth mechanism only
            return storage_error(400, "Only one auth mechanism allowed")
        blob_id = request.path_params["blob_id"]
        q = request.query_params
        expires = int(q["expires"]) if q.get("expires", "").isdigit() else 0
        if not hmac.compare_digest(q.get("signature", ""), self._sign(blob_id, expires)):
            return storage_error(403, "SignatureDoesNotMatch")
        if expires < self._wall():
            return storage_error(400, "ExpiredToken")
        job = self.result_of(blob_id)
        if job is None:
            return storage_error(404, "NoSuchKey")
        return stream(job.result(), "application/octet-stream")

    def _wall(self) -> float:
        return self.clock.epoch(self.clock.now())  # so that a test can advance past expiry

    def _sign(self, blob_id: str, expires: int) -> str:
        message = f"{blob_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def catalog_error(status: int, detail: str) -> Response:
    """A catalog error: JSON:API ``{"errors": [{"status", "title", "detail"}]}``."""
    body = {"errors": [{"status": str(status), "title": "Error", "detail": detail}]}
    return JSONResponse(body, status, media_type=JSON_API)


def storage_error(status: int, detail: str) -> Response:
    """A cloud-storage error: an XML ``<Error><Code>``."""
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{detail}</Code></Error>"
    return Response(body, status, media_type="application/xml")


def stream(body: bytes, media_type: str) -> Response:
    """``body`` streamed with its length, never compressed (the SDK reads blobs undecoded)."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), CHUNK):
            yield body[start : start + CHUNK]

    return StreamingResponse(chunks(), 200, {"Content-Length": str(len(body))}, media_type)


def _blob_task(params: Mapping[str, Any]) -> str | None:
    # a blob, and its signed URL, count for their job: the id's last segment
    name = str(params.get("blob_id", ""))
    return name.rpartition("/")[2] or None
