"""EarthOne's HTTP surface as the adapter uses it: compute and catalog calls with the bearer JWT
(renewed, and retried once on a 401, by :mod:`taskwarden.providers.bearer`), the paged job
search, and the two-step blob download.

Paths are the SDK's (``earthdaily/earthone/core/compute/*.py``, ``core/catalog/blob*.py``)::

    GET  {compute}/jobs/{id}                          Job.get, refresh, wait_for_completion
    GET  {compute}/jobs/{id}/log                      Job.log (NDJSON, streamed)
    POST {compute}/jobs/{id}/cancel                   Job.cancel
    GET  {compute}/jobs?filter=…&page_size=…          Function.jobs, then ?page_cursor=… only
    GET  {compute}/jobs?filter=…&limit=0              Search.count (meta.total)
    POST {compute}/jobs/cancel {"filter": […]}        Function.cancel_jobs
    GET  {compute}/functions/{id}[?include=job.statistics]   Function.get, refresh
    GET  {compute}/functions/{id}/log                 Function.build_log (gzip)
    GET  {catalog}/storage/{quote(blob id)}           Blob.get (Job.result_blob)
    GET  {catalog}/storage/download/{quote(blob id)}  Blob.get_data step 1: a signed URL
    GET  <resumable_url>                              step 2: the bytes, no Authorization
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import httpx

from taskwarden import net
from taskwarden.config import EarthOneSettings
from taskwarden.errors import ProviderUnavailable
from taskwarden.providers.bearer import TokenSource, with_bearer

NAME = "earthone"
JSON = "application/json"


class EarthOneApi:
    """One adapter's calls to EarthOne; ``tokens`` is its JWT source."""

    def __init__(self, settings: EarthOneSettings, client: httpx.AsyncClient) -> None:
        assert settings.compute_url and settings.catalog_url and settings.iam_url  # filled in
        self.compute = settings.compute_url
        self.catalog = settings.catalog_url
        self.page_size = settings.page_size
        self._client = client
        self.tokens = TokenSource(
            client,
            provider=NAME,
            url=f"{settings.iam_url}/token",
            client_id=settings.client_id,
            refresh_token=settings.refresh_token,
            token=settings.token,
            leeway=settings.refresh_leeway,
        )

    async def get(
        self, base: str, path: str, *, what: str, params: Mapping[str, Any] | None = None
    ) -> Any:
        """GET ``base/path`` (JSON), authorized."""
        url = f"{base}/{path}"

        async def send(headers: dict[str, str]) -> httpx.Response:
            return await net.request(
                self._client, "GET", url, provider=NAME, what=what, headers=headers,
                params=params,
            )  # fmt: skip

        return net.json_body(await with_bearer(self.tokens, send), provider=NAME)

    async def post(self, path: str, *, what: str, body: Any = None) -> Any:
        """POST ``{compute}/path`` (a cancellation: idempotent, so retried in the call)."""
        url = f"{self.compute}/{path}"

        async def send(headers: dict[str, str]) -> httpx.Response:
            return await net.request(
                self._client, "POST", url, provider=NAME, what=what, headers=headers,
                json=body, idempotent=True,
            )  # fmt: skip

        return net.json_body(await with_bearer(self.tokens, send), provider=NAME)

    async def job(self, job_id: str) -> dict[str, Any]:
        return _object(
            await self.get(self.compute, f"jobs/{segment(job_id)}", what=f"job {job_id}")
        )

    async def function(self, function_id: str, statistics: bool = False) -> dict[str, Any]:
        params = {"include": "job.statistics"} if statistics else None
        path = f"functions/{segment(function_id)}"
        return _object(
            await self.get(self.compute, path, what=f"function {function_id}", params=params)
        )

    async def count_jobs(self, function_id: str) -> int:
        """How many jobs the function has (``Search.count()``: ``limit=0``, ``meta.total``)."""
        params = {"filter": function_filter(function_id), "limit": 0}
        page = _object(await self.get(self.compute, "jobs", what="job search", params=params))
        total = page.get("meta", {}).get("total") if isinstance(page.get("meta"), dict) else None
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ProviderUnavailable(
                "GET jobs?limit=0: the answer has no meta.total", provider=NAME
            )
        return total

    async def jobs(self, function_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The function's jobs, a page at a time, following ``meta.page_cursor`` as the SDK
        does (the next request carries the cursor alone)."""
        params: dict[str, Any] = {
            "filter": function_filter(function_id),
            "page_size": self.page_size,
        }
        seen: set[str] = set()
        while True:
            page = _object(await self.get(self.compute, "jobs", what="job search", params=params))
            data, meta = page.get("data"), page.get("meta")
            if not isinstance(data, list) or not isinstance(meta, dict):
                raise ProviderUnavailable(
                    "GET jobs: expected {data: [...], meta: {...}}", provider=NAME
                )
            yield [job for job in data if isinstance(job, dict)]
            cursor = meta.get("page_cursor")
            if not cursor or not isinstance(cursor, str) or cursor in seen:
                return  # a repeated cursor would loop for ever
            seen.add(cursor)
            params = {"page_cursor": cursor}

    async def open_stream(
        self, stack: AsyncExitStack, url: str, *, what: str, authorized: bool = True
    ) -> httpx.Response:
        """Open a download on ``stack``: authorized (a 401 buys one new token and one retry),
        or not (a signed URL, which must not see our token); never compressed."""
        plain = {"Accept-Encoding": "identity"}

        async def send(headers: dict[str, str]) -> httpx.Response:
            opening = net.stream(
                self._client, "GET", url, provider=NAME, what=what, headers={**headers, **plain}
            )
            return await stack.enter_async_context(opening)

        if not authorized:
            return await send({})
        return await with_bearer(self.tokens, send)

    async def blob(self, blob_id: str) -> dict[str, Any]:
        """``Blob.get(id)``, as ``Job.result_blob()`` asks (RemoteNotFound: no such blob)."""
        path = f"storage/{quote(blob_id)}"  # as the SDK: "/" kept, ":" as %3A
        return _object(await self.get(self.catalog, path, what=f"result blob {blob_id}"))

    async def signed_url(self, blob_id: str) -> str:
        """Step 1 of ``Blob.get_data``: the ``resumable_url`` of ``storage/download``."""
        doc = await self.get(
            self.catalog, f"storage/download/{quote(blob_id)}", what=f"blob {blob_id}"
        )
        url = _dig(doc, "data", "attributes", "resumable_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ProviderUnavailable(
                f"GET storage/download/{blob_id}: no absolute resumable_url in the answer",
                provider=NAME,
            )
        return url


def function_filter(function_id: str) -> str:
    """``Job.function_id == id`` as the SDK serializes a filter: compact JSON, sorted keys."""
    clause = [{"name": "function_id", "op": "eq", "val": function_id}]
    return json.dumps(clause, separators=(",", ":"), sort_keys=True)


def segment(value: str) -> str:
    # the SDK puts ids into paths as they are; quoting changes nothing for the ids it makes
    return quote(value, safe=":")


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProviderUnavailable("expected a JSON object in the answer", provider=NAME)
    return value


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc
