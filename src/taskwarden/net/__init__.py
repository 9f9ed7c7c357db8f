"""The HTTP kit every platform call goes through: the client and its in-call retries
(:mod:`.client`), the per-provider clients a worker process builds once (:mod:`.clients`), the
translation of failures into the error tree (:mod:`.errors`), what response headers say
(:mod:`.headers`), the sharded connection pools (:mod:`.transport`) and the guard on URLs a
platform hands over (:mod:`.urls`).

This package and the adapters are the only httpx users (besides the API client,
:mod:`taskwarden.client`); everything above them sees the error tree of :mod:`taskwarden.errors`,
and a provider's client only as :data:`HttpClient`, handed to its factory.
"""

from taskwarden.net.client import (
    ERROR_BODY_LIMIT,
    CallPolicy,
    ProviderClient,
    Reword,
    build_client,
    call_policy,
    iter_body,
    json_body,
    read_capped,
    request,
    retry_in_call,
    stream,
)
from taskwarden.net.clients import (
    BeforeRequest,
    HttpClient,
    HttpErrors,
    ProviderClients,
    provider_clients,
)
from taskwarden.net.errors import (
    MAX_MESSAGE,
    describe_request,
    error_message,
    platform_message,
    raise_for_status,
    transport_error,
)
from taskwarden.net.headers import (
    content_disposition_filename,
    content_length,
    parse_retry_after,
    safe_filename,
)
from taskwarden.net.posting import Answer, PostFailed, post, receiver_client
from taskwarden.net.transport import ShardedTransport
from taskwarden.net.urls import (
    NO_ORIGIN,
    Guard,
    IPAddress,
    Origin,
    Policy,
    host_allowed,
    literal,
    non_public,
    origin,
    policy_for,
    private_reason,
)

__all__ = [
    "ERROR_BODY_LIMIT",
    "MAX_MESSAGE",
    "NO_ORIGIN",
    "Answer",
    "BeforeRequest",
    "CallPolicy",
    "Guard",
    "HttpClient",
    "HttpErrors",
    "IPAddress",
    "Origin",
    "Policy",
    "PostFailed",
    "ProviderClient",
    "ProviderClients",
    "Reword",
    "ShardedTransport",
    "build_client",
    "call_policy",
    "content_disposition_filename",
    "content_length",
    "describe_request",
    "error_message",
    "host_allowed",
    "iter_body",
    "json_body",
    "literal",
    "non_public",
    "origin",
    "parse_retry_after",
    "platform_message",
    "policy_for",
    "post",
    "private_reason",
    "provider_clients",
    "raise_for_status",
    "read_capped",
    "receiver_client",
    "request",
    "retry_in_call",
    "safe_filename",
    "stream",
    "transport_error",
]
