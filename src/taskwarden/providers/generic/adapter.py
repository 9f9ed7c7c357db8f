"""The generic HTTP provider, ``http``: any platform with a JSON status URL, described by a
profile in settings instead of code (docs/providers/http.md has a worked example).

A remote id is ``<profile>:<task id>``: the profile (``TASKWARDEN_PROVIDERS__HTTP__PROFILES``)
says how to reach the platform, the rest is the platform's own id (colons allowed). The profile
is part of the id so that task 42 on one platform and task 42 on another are two watches with
two archives. Registration ``params`` fill the other placeholders of the URL templates.

    GET   status_url                    one status check; the document is mapped by the profile
                                        (:mod:`~taskwarden.providers.generic_spec`)
    GET   status_url again, at archive  archived as ``status.json``; the outputs it lists at
                                        ``outputs_path`` are streamed next to it
    abort_method abort_url              ``taskwarden cancel --abort``, when the profile has one

Credentials (``headers``, ``query`` and a bearer token from ``token``) go to the status and
abort URLs, to outputs on the status URL's origin unless ``output_auth`` says otherwise, and
never along a redirect that leaves that origin: httpx itself would carry a custom header such
as ``X-Api-Key`` to any host a redirect names, so redirects are followed here, by hand.

With ``allow_inline_specs`` a registration may carry a whole profile in ``params.spec``; the
part of the remote id before the colon is then only a name. It is off by default because it
lets whoever can send a registration make the workers fetch any URL (SSRF).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from taskwarden import net
from taskwarden.config import GenericHttpSettings, GenericProfile, Settings
from taskwarden.errors import (
    CredentialsRejected,
    PermanentError,
    ProviderUnavailable,
    UrlRefused,
)
from taskwarden.jsonpath import render
from taskwarden.lifecycle import Observation
from taskwarden.models import reasons
from taskwarden.net import host_allowed, origin
from taskwarden.providers.base import OutputRef, OutputStream, Target
from taskwarden.providers.generic.auth import TokenCache
from taskwarden.providers.generic.spec import (
    NAME,
    Spec,
    observe,
    output_links,
    url_filename,
)

STATUS_JSON = "status.json"
JSON = "application/json"
MAX_REDIRECTS = 5
INLINE_CACHE = 256  # compiled inline specs kept per process
_NAMED, _UNNAMED = "named|", "url|"  # OutputRef.key prefixes: did the document name the file?


def build(settings: Settings, client: httpx.AsyncClient) -> GenericHttpProvider:
    """The generic HTTP adapter for this process, sharing its HTTP client."""
    return GenericHttpProvider(settings.providers.http, client)


@dataclass(frozen=True)
class Job:
    """One remote task resolved against its profile: the URLs to call and whose they are."""

    spec: Spec
    task_id: str
    values: Mapping[str, str]
    status_url: str

    @property
    def origin(self) -> net.Origin:
        return origin(self.status_url)


_resolvers: list[tuple[GenericHttpSettings, Resolver]] = []  # the last one built, by identity


def validate(settings: Settings, target: Target) -> None:
    """Refuse (PermanentError) a registration whose profile, id or params cannot make a status
    URL: an unknown profile, a missing placeholder, a refused or invalid inline spec."""
    http_settings = settings.providers.http
    if not _resolvers or _resolvers[0][0] is not http_settings:
        _resolvers[:] = [(http_settings, Resolver(http_settings))]
    _resolvers[0][1].job(target)


class Resolver:
    """Targets resolved against the configured profiles (and inline ones, when allowed);
    needs no HTTP client, so registration can use it to refuse a bad target up front."""

    def __init__(self, settings: GenericHttpSettings) -> None:
        self._specs = {name: Spec.compile(name, p) for name, p in settings.profiles.items()}
        self._inline_allowed = settings.allow_inline_specs
        self._inline: dict[str, Spec] = {}

    def job(self, target: Target) -> Job:
        """The profile and URLs of ``target``; a PermanentError says what is wrong with it."""
        profile_name, colon, task_id = target.remote_id.partition(":")
        if not colon or not profile_name or not task_id:
            raise PermanentError(
                f"http remote ids are '<profile>:<task id>', got {target.remote_id!r}",
                provider=NAME,
            )
        params = dict(target.params)
        inline = params.pop("spec", None)
        if inline is not None:
            spec = self._inline_spec(profile_name, inline)
        else:
            spec = self._profile(profile_name)
        values = {
            key: str(value)
            for key, value in params.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        }
        values["id"] = task_id  # the platform's id wins over a param of that name
        status_url = self.render(spec, spec.profile.status_url, values, "status_url")
        return Job(spec, task_id, values, status_url)

    def _profile(self, name: str) -> Spec:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            raise PermanentError(
                f"no http profile {name!r} (configured: {known}); profiles are set in"
                " TASKWARDEN_PROVIDERS__HTTP__PROFILES",
                provider=NAME,
            )
        return spec

    def _inline_spec(self, label: str, raw: Any) -> Spec:
        if not self._inline_allowed:
            raise PermanentError(
                "params.spec (an inline http profile) is refused: set"
                " TASKWARDEN_PROVIDERS__HTTP__ALLOW_INLINE_SPECS=true to accept them (only if"
                " every registration sender may make the workers fetch any URL)",
                provider=NAME,
            )
        key = json.dumps(raw, sort_keys=True, default=str)
        cached = self._inline.get(key)
        if cached is not None:
            return cached
        try:
            profile = GenericProfile.model_validate(raw)
        except ValidationError as exc:
            raise PermanentError(
                f"params.spec is not a valid profile: {reasons(exc, 'spec')}", provider=NAME
            ) from None
        if len(self._inline) >= INLINE_CACHE:
            self._inline.pop(next(iter(self._inline)))
        spec = self._inline[key] = Spec.compile(f"{label} (inline)", profile)
        return spec

    @staticmethod
    def render(spec: Spec, template: str, values: Mapping[str, str], what: str) -> str:
        try:
            return render(template, values)
        except KeyError as exc:
            raise PermanentError(
                f"http profile {spec.name!r}: {what} needs {{{exc.args[0]}}}; register with"
                f" params={{{exc.args[0]!r}: ...}}",
                provider=NAME,
            ) from None
        except ValueError as exc:
            raise PermanentError(f"http profile {spec.name!r}: {exc}", provider=NAME) from None


class GenericHttpProvider:
    """A :class:`~taskwarden.providers.base.Provider` for platforms described by a profile."""

    name = NAME

    def __init__(self, settings: GenericHttpSettings, client: httpx.AsyncClient) -> None:
        self._resolver = Resolver(settings)
        self._client = client
        self._tokens = TokenCache(client, NAME)

    def job(self, target: Target) -> Job:
        """The profile and URLs of ``target``; a PermanentError says what is wrong with it."""
        return self._resolver.job(target)

    async def fetch_status(self, target: Target) -> Observation:
        """One status check: one GET of the status URL (plus a token request when one is due)."""
        job = self.job(target)
        response = await self._read(job, "GET", job.status_url)
        return observe(job.spec, net.json_body(response, provider=NAME))

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        """The final status document as ``status.json``, then every output it lists."""
        job = self.job(target)
        response = await self._read(job, "GET", job.status_url)
        document = net.json_body(response, provider=NAME)
        refs = [
            OutputRef(
                name=STATUS_JSON,
                source=f"{NAME}:{_public(job.status_url)}",
                content=response.content,
                content_type=JSON,
            )
        ]
        for index, link in enumerate(output_links(job.spec, document, job.status_url)):
            name = link.name or url_filename(link.url) or f"output-{index + 1}"
            refs.append(
                OutputRef(
                    name=name,
                    source=f"{NAME}:{_public(link.url)}",
                    key=(_NAMED if link.name else _UNNAMED) + link.url,
                )
            )
        return refs

    def open_output(
        self, target: Target, ref: OutputRef
    ) -> AbstractAsyncContextManager[OutputStream]:
        """Stream one output: ``status.json`` from memory, the others from their URLs."""
        return self._open_output(target, ref)

    async def abort(self, target: Target) -> None:
        """Send the profile's abort request; a profile without ``abort_url`` cannot abort."""
        job = self.job(target)
        profile = job.spec.profile
        if profile.abort_url is None:
            raise PermanentError(
                f"http profile {job.spec.name!r} has no abort_url: the remote task was not"
                " asked to stop",
                provider=NAME,
            )
        url = Resolver.render(job.spec, profile.abort_url, job.values, "abort_url")
        await self._read(job, profile.abort_method, url, json_body=profile.abort_json)

    # -- HTTP --------------------------------------------------------------------------------
    @asynccontextmanager
    async def _open_output(self, target: Target, ref: OutputRef) -> AsyncIterator[OutputStream]:
        if ref.content is not None:
            yield OutputStream(_one(ref.content), ref.content_type, len(ref.content))
            return
        job = self.job(target)
        named = ref.key.startswith(_NAMED)
        url = ref.key.removeprefix(_NAMED).removeprefix(_UNNAMED)
        auth = job.spec.profile.output_auth
        credentials = auth == "always" or (auth == "same_origin" and origin(url) == job.origin)
        try:
            response = await net.retry_in_call(
                self._client, "GET", url, provider=NAME,
                once=lambda: self._response(job, "GET", url, credentials=credentials,
                                            download=True),
            )  # fmt: skip
        except CredentialsRejected as exc:
            # the status request that listed this URL just passed with these credentials, so a
            # refusal here is the URL's own: most often a signed URL that expired. Retrying the
            # archive lists the outputs again, with fresh URLs.
            raise ProviderUnavailable(
                f"{exc}; listed outputs are fetched again on retry (an expired signed URL?)",
                provider=NAME,
                status_code=exc.status_code,
            ) from exc
        try:
            length = net.content_length(response)
            disposition = net.content_disposition_filename(
                response.headers.get("Content-Disposition")
            )
            yield OutputStream(
                chunks=net.iter_body(response, provider=NAME, expected=length),
                content_type=response.headers.get("Content-Type"),
                length=length,
                filename=None if named else disposition,
            )
        finally:
            await response.aclose()

    async def _read(
        self, job: Job, method: str, url: str, *, json_body: Any = None
    ) -> httpx.Response:
        """A whole 2xx response to a request that carries the profile's credentials, with the
        in-call retries every provider's requests have."""
        return await net.retry_in_call(
            self._client, method, url, lambda: self._read_once(job, method, url, json_body),
            provider=NAME,
        )  # fmt: skip

    async def _read_once(self, job: Job, method: str, url: str, json_body: Any) -> httpx.Response:
        response = await self._response(job, method, url, credentials=True, json_body=json_body)
        try:
            limit = net.call_policy(self._client).max_json_bytes
            await net.read_capped(response, provider=NAME, limit=limit)
        except httpx.HTTPError as exc:
            raise net.transport_error(exc, provider=NAME, method=method, url=url) from exc
        finally:
            await response.aclose()
        return response

    async def _response(
        self,
        job: Job,
        method: str,
        url: str,
        *,
        credentials: bool,
        json_body: Any = None,
        download: bool = False,
    ) -> httpx.Response:
        """An open 2xx response (the caller closes it), or an error from the tree.

        A 401 to a bearer token from the profile's token endpoint fetches a new token and
        tries once more; a second 401 is CredentialsRejected.
        """
        profile = job.spec.profile
        refused: str | None = None
        while True:
            # a download asks for the bytes as they are (Content-Length must count what we are
            # handed); some APIs answer "Accept: application/json" with metadata instead
            headers = {"Accept-Encoding": "identity"} if download else {"Accept": JSON}
            params: dict[str, str] = {}
            token = None
            if credentials:
                headers |= {k: v.get_secret_value() for k, v in profile.headers.items()}
                params = {k: v.get_secret_value() for k, v in profile.query.items()}
                if profile.token is not None:
                    token = await self._tokens.bearer(profile.token, refused=refused)
                    headers["Authorization"] = f"Bearer {token}"
            try:
                request = self._client.build_request(
                    method,
                    url,
                    headers=headers,
                    params=params or None,
                    json=json_body,
                )
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise net.transport_error(exc, provider=NAME, method=method, url=url) from exc
            response = await self._follow(job, request)
            if response.status_code == 401 and token is not None and refused is None:
                await response.aclose()
                refused = token
                continue
            if not response.is_success:
                body = await _error_body(response)
                net.raise_for_status(response, provider=NAME, what=_what(job), body=body)
            return response

    async def _follow(self, job: Job, request: httpx.Request) -> httpx.Response:
        """Send ``request``, following redirects; credentials stay on the status URL's origin."""
        secret = {name.lower() for name in job.spec.profile.headers} | {"authorization"}
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await self._client.send(request, stream=True, follow_redirects=False)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise net.transport_error(
                    exc, provider=NAME, method=request.method, url=request.url
                ) from exc
            following = response.next_request
            if following is None:
                return response
            await response.aclose()
            if origin(str(following.url)) != job.origin:
                for name in secret:
                    following.headers.pop(name, None)
                host = origin(str(following.url))[1]
                if not host_allowed(host, job.spec.profile.output_hosts):
                    raise UrlRefused(
                        f"{request.method} {_public(str(request.url))} redirects to {host},"
                        f" which is not in http profile {job.spec.name!r}'s output_hosts",
                        provider=NAME,
                    )
            request = following
        raise ProviderUnavailable(
            f"{request.method} {_public(str(request.url))}: more than {MAX_REDIRECTS} redirects",
            provider=NAME,
        )


def _what(job: Job) -> str:
    return f"http task {job.spec.name}:{job.task_id}"


def _public(url: str) -> str:
    """``url`` without its query or fragment, where signatures and keys travel."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def _error_body(response: httpx.Response) -> bytes:
    """At most ERROR_BODY_LIMIT bytes of an error response, for its message; then closed."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= net.ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status code says enough
    finally:
        await response.aclose()
    return b"".join(chunks)[: net.ERROR_BODY_LIMIT]


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
