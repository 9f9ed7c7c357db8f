"""The results of a v2 processing job, reached as up42-py 4.3 reaches them: the STAC collection,
its items page by page, and each item's assets by the SDK's download flow.

    GET  v2/assets/stac/collections/{id}   collection.json; ``id`` is the last path segment of
                                           ``results.collection`` (``processing.py:137-142``)
    GET  {its rel=items href}?collections={id}
                                           pages of items, as pystac-client 0.7's ItemSearch
                                           asks; each ``rel=next`` link is followed as given
                                           (GET, or POST with its ``body``), until a page
                                           without features or without a next link
    each item                              ``item-<id>.json``: the item as its page served it
    each asset whose href is on the API    POST {href}/download-url → {"url"}, then a GET of
                                           that URL without our Authorization header
                                           (``stac.py:16-36``, ``utils.py:188-213``), streamed
    any other asset                        listed as skipped: 4.3's ``asset.file`` is None

The download URL is asked for when the asset is opened, not when it is listed (signed URLs live
30 s to 5 min, by UP42's docs), and asked for again when the storage refuses it (a 4xx: expired),
up to three URLs. The asset is named as the SDK names the file (``utils.get_filename``: the
``response-content-disposition`` query parameter's ``filename``, plus the URL path's suffix),
else ``<item id>_<asset key>``. Our token only travels to the API's origin: a collection whose
items or next links lead elsewhere is refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from taskwarden import net
from taskwarden.errors import (
    CredentialsRejected,
    OutputInvalid,
    ProviderUnavailable,
    RemoteNotFound,
    RequestRejected,
)
from taskwarden.providers.base import OutputRef, OutputStream
from taskwarden.providers.up42.api import NAME, Up42Api

STAC = "v2/assets/stac"
DOWNLOAD_URL = "/download-url"  # 4.3 stac.DOWNLOAD_URL_SUFFIX
URL_ATTEMPTS = 3
JSON = "application/json"
_ASSET = "asset:"


class Stac:
    """Lists a processing job's STAC results and streams its assets."""

    def __init__(self, api: Up42Api, max_items: int) -> None:
        self._api = api
        self._max_items = max_items

    async def results(self, collection_url: str, what: str) -> list[OutputRef]:
        """The collection, its items and their assets (``collection_url``: results.collection)."""
        collection_id = collection_url.rstrip("/").split("/")[-1]
        path = f"{STAC}/collections/{quote(collection_id, safe='')}"
        try:
            response = await self._api.request("GET", self._api.url(path), what=what)
        except RemoteNotFound as exc:
            # the job says it delivered: the collection may not be indexed yet
            raise ProviderUnavailable(f"{what}: {exc}", provider=NAME) from exc
        refs = [_inline("collection.json", response.content, path)]
        collection = net.json_body(response, provider=NAME)
        items_url = self._items_url(collection, self._api.url(path))
        for item in await self._items(items_url, collection_id, what):
            refs += self._item_refs(item, what)
        return refs

    @asynccontextmanager
    async def open(self, ref: OutputRef) -> AsyncIterator[OutputStream]:
        """Stream one asset: a fresh download URL, fetched without our token."""
        href = ref.key.removeprefix(_ASSET)
        last: Exception | None = None
        async with AsyncExitStack() as stack:
            for _ in range(URL_ATTEMPTS):
                url = await self._download_url(href, ref.name)
                opened = self._api.stream(url, what=ref.name, authenticated=False)
                try:
                    response = await stack.enter_async_context(opened)
                except (RequestRejected, CredentialsRejected, RemoteNotFound) as exc:
                    last = exc  # expired or revoked: a fresh URL may work
                    continue
                length = net.content_length(response)
                kind = response.headers.get("Content-Type", ref.content_type)
                yield OutputStream(
                    net.iter_body(response, provider=NAME, expected=length),
                    kind,
                    length,
                    sdk_filename(url),
                )
                return
        raise ProviderUnavailable(
            f"{ref.name}: {URL_ATTEMPTS} signed download URLs were refused; last: {last}",
            provider=NAME,
        )

    def _items_url(self, collection: Any, url: str) -> str:
        """The collection's ``rel=items`` link (relative to the collection, as pystac resolves
        it), or the standard path when it has none on the API."""
        links = collection.get("links") if isinstance(collection, dict) else None
        for link in links if isinstance(links, list) else []:
            href = link.get("href") if isinstance(link, dict) else None
            if link.get("rel") == "items" and isinstance(href, str):
                absolute = _join(url, href)
                if absolute is not None and self._on_api(absolute):
                    return absolute
        return f"{url}/items"

    async def _items(self, url: str, collection_id: str, what: str) -> list[dict[str, Any]]:
        """Every item, page by page, as pystac-client pages them."""
        first = str(httpx.URL(url).copy_merge_params({"collections": collection_id}))
        request: tuple[str, str, Any] = ("GET", first, None)
        seen: set[str] = set()
        items: list[dict[str, Any]] = []
        while True:
            method, href, body = request
            seen.add(json.dumps(request, sort_keys=True))
            options = {"json": body} if method == "POST" else {}
            response = await self._api.request(method, href, what=what, **options)
            page = net.json_body(response, provider=NAME)
            features = page.get("features") if isinstance(page, dict) else None
            if not isinstance(features, list) or not features:
                return items
            items += [f for f in features if isinstance(f, dict)]
            if len(items) > self._max_items:
                raise OutputInvalid(
                    f"{what}: more than {self._max_items} result items"
                    " (TASKWARDEN_PROVIDERS__UP42__RESULTS_MAX_MEMBERS)",
                    provider=NAME,
                )
            following = _next_link(page, href)
            if following is None:
                return items
            if not self._on_api(following[1]):
                raise OutputInvalid(
                    f"{what}: a next page leads off the UP42 API ({_public(following[1])})",
                    provider=NAME,
                )
            if json.dumps(following, sort_keys=True) in seen:
                raise OutputInvalid(f"{what}: the item pages link in a circle", provider=NAME)
            request = following

    def _item_refs(self, item: dict[str, Any], what: str) -> list[OutputRef]:
        item_id = str(item.get("id") or "item")
        self_link = f"{STAC}/collections/{item.get('collection')}/items/{item_id}"
        body = json.dumps(item, indent=2).encode()
        refs = [_inline(f"item-{item_id}.json", body, self_link)]
        assets = item.get("assets")
        for key, asset in (assets if isinstance(assets, dict) else {}).items():
            href = asset.get("href") if isinstance(asset, dict) else None
            if not isinstance(href, str) or not href:
                continue
            name = f"{item_id}_{key}"
            kind = asset.get("type") if isinstance(asset.get("type"), str) else None
            source = f"{NAME}:{self._api.source(href)}"
            if not self._on_api(href):
                reason = "its href is not on the UP42 API, so the SDK has no download for it"
                refs.append(OutputRef(name=name, source=source, skipped=reason))
                continue
            refs.append(OutputRef(name=name, source=source, content_type=kind, key=_ASSET + href))
        return refs

    async def _download_url(self, href: str, what: str) -> str:
        url = href if href.endswith(DOWNLOAD_URL) else href + DOWNLOAD_URL
        response = await self._api.request("POST", url, what=f"{what} download-url")
        body = net.json_body(response, provider=NAME)
        signed = body.get("url") if isinstance(body, dict) else None
        if not isinstance(signed, str) or not signed.startswith(("http://", "https://")):
            raise OutputInvalid(f"{what}: download-url gave no URL", provider=NAME)
        return signed

    def _on_api(self, url: str) -> bool:
        """Whether ``url`` is under the API's base (4.3: ``href.startswith(host.endpoint(""))``,
        here by origin and path, so that ``api.up42.com.example`` is not)."""
        base = httpx.URL(self._api.base).path.rstrip("/")
        try:
            path = httpx.URL(url).path
        except httpx.InvalidURL:
            return False
        return self._api.same_origin(url) and (path == base or path.startswith(base + "/"))


def sdk_filename(signed_url: str) -> str | None:
    """The name 4.3 saves a download under (``utils.get_filename``), or None when the URL names
    none (the SDK then says ``output``)."""
    parts = urlsplit(signed_url)
    values = parse_qs(parts.query).get("response-content-disposition") or [""]
    _, found, name = values[0].partition("filename=")
    if not found:
        return None
    if name.startswith('"'):
        name = name[1:].split('"', 1)[0]
    return f"{name}{PurePosixPath(parts.path).suffix}" or None


def _next_link(page: dict[str, Any], url: str) -> tuple[str, str, Any] | None:
    """The page's ``rel=next`` request (an href relative to ``url``, the page's own, is
    resolved: the STAC API wants them absolute, and resolving costs nothing)."""
    links = page.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == "next":
            href, method = link.get("href"), str(link.get("method", "GET")).upper()
            absolute = _join(url, href) if isinstance(href, str) and href else None
            if absolute is not None and method in ("GET", "POST"):
                return method, absolute, link.get("body") if method == "POST" else None
    return None


def _join(base: str, href: str) -> str | None:
    try:
        return str(httpx.URL(base).join(href))
    except httpx.InvalidURL:
        return None


def _inline(name: str, content: bytes, source: str) -> OutputRef:
    return OutputRef(name=name, source=f"{NAME}:{source}", content=content, content_type=JSON)


def _public(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
