"""The one error tree of taskwarden.

Everything taskwarden raises on purpose derives from :class:`TaskwardenError`. Code that decides
what to do next asks one question: is it retryable?

    TaskwardenError
    ├── ConfigError                 settings are missing, malformed or unsafe
    ├── InvalidRegistration         a registration (message, CLI, API) is malformed
    ├── RetryableError              try again later; ``retry_after`` may say when
    │   ├── ProviderUnavailable     5xx, connection refused or reset, timeouts, short bodies
    │   │   └── ResponseTooLarge    a status/JSON body over ``TASKWARDEN_HTTP__MAX_JSON_BYTES``
    │   ├── RateLimited             429 (``retry_after`` from the Retry-After header)
    │   └── StorageUnavailable      the archive store did not accept a write
    └── PermanentError              retrying will not help
        ├── CredentialsRejected     401/403 with fresh credentials
        ├── RemoteNotFound          the platform says the task does not exist
        ├── RequestRejected         400/422: the platform refused what we sent
        ├── OutputInvalid           an output is malformed, too large, or not what was announced
        └── UrlRefused              a URL the platform handed over is not allowed (net/urls.py)

httpx exceptions are translated inside the HTTP kit (``net/client.py`` with
``net/errors.py``); nothing above it sees an httpx type. The original exception is
kept as ``__cause__``.
"""

from __future__ import annotations


class TaskwardenError(Exception):
    """Base of every error taskwarden raises on purpose."""

    def __init__(
        self, message: str, *, provider: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class ConfigError(TaskwardenError):
    """Settings are missing, malformed or unsafe; the message names the variable to set."""


class InvalidRegistration(TaskwardenError):
    """A registration request was malformed; the message says which field and why."""


class RetryableError(TaskwardenError):
    """A failure that may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class ProviderUnavailable(RetryableError):
    """The platform did not answer usefully: 5xx, network failure, timeout, truncated body."""


class ResponseTooLarge(ProviderUnavailable):
    """A status or metadata response larger than the cap on JSON bodies.

    Retryable like any garbled answer (a proxy's error page, a document that is paginated
    next time), so it ends in ``error`` when the retry policy runs out; a provider or watch
    whose documents will not shrink names it in ``non_retryable`` to give up at once.
    """


class RateLimited(RetryableError):
    """The platform answered 429; ``retry_after`` carries its Retry-After when it sent one."""


class StorageUnavailable(RetryableError):
    """The archive store could not be reached or refused a write."""


class PermanentError(TaskwardenError):
    """A failure that retrying will not fix."""


class CredentialsRejected(PermanentError):
    """The platform refused our credentials (401/403), even freshly obtained ones."""


class RemoteNotFound(PermanentError):
    """The platform says the remote task (or output) does not exist."""


class RequestRejected(PermanentError):
    """The platform refused the request as malformed (400/422)."""


class OutputInvalid(PermanentError):
    """An output or response body is malformed, oversized, or shorter than announced."""


class UrlRefused(PermanentError):
    """A URL the platform handed over is on a host or address the provider may not fetch."""
