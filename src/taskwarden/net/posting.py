"""Plain POSTs to URLs that are not platforms: webhook receivers. One client per process with no
redirects and its own URL guard, and an :class:`Answer` instead of an httpx response, so the
webhook sender never handles an httpx type."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from taskwarden.errors import TaskwardenError
from taskwarden.net.clients import HttpClient
from taskwarden.net.urls import Guard, Policy
from taskwarden.version import __version__

ANSWER_CHARS = 200  # of a refusal's body, kept for the error message


class PostFailed(TaskwardenError):
    """The POST got no answer: the connection failed, was reset, or a timeout passed."""


@dataclass(frozen=True)
class Answer:
    """What a receiver answered: its status, the start of its body (whitespace squashed), and
    its ``Retry-After`` header as sent."""

    status: int
    text: str
    retry_after: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400


def receiver_client(
    timeout: float, policy: Policy, agent: str = "taskwarden-webhooks"
) -> HttpClient:
    """A client for receivers: ``timeout`` per phase, redirects never followed, ``policy``'s URL
    guard on every request (the address reached is checked too)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": f"{agent}/{__version__}"},
    )
    Guard(policy).install(client)
    return client


async def post(client: HttpClient, url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body``; raise :class:`PostFailed` when nothing answered, ``UrlRefused`` (from the
    guard) when the URL may not be called."""
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise PostFailed(f"{type(exc).__name__}: {exc}") from exc
    text = " ".join(response.text.split())[:ANSWER_CHARS]
    return Answer(response.status_code, text, response.headers.get("Retry-After"))
