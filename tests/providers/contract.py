"""The table the provider contract runs over (tests/providers/test_contract.py): how each
built-in provider is configured against the simulator, and, for each kind of remote task it
watches, how to script one and how to name one that does not exist.

A new built-in provider joins the contract by adding a :class:`Setup` and its :class:`Case` rows
(the idea of dramatiq's ``tests/conftest.py``, which runs one test body over every broker).
Every credential is a string unique to this run, so a test can look for it in any message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from secrets import token_hex
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, SecretStr

from taskwarden.config.providers import (
    DescartesLabsSettings,
    GenericHttpSettings,
    GenericProfile,
    GeoboxSettings,
    IsahitSettings,
    Up42Settings,
)
from taskwarden.providers.base import Target
from taskwarden.simulator.generic import profile as generic_profile
from taskwarden.simulator.server import SimulatorServer

Secrets = Mapping[str, str]
ISAHIT_PROJECT = "sim-project"
UP42_USER, DL_CLIENT, ISAHIT_ID, HTTP_CLIENT = "c-user", "c-client", "c-access-id", "c-client"


def secret(what: str) -> str:
    """A credential no other string in the run contains."""
    return f"{what}-{token_hex(12)}"


@dataclass(frozen=True)
class Setup:
    """How one provider is configured: its settings section for a set of credentials, and
    how to make the simulator accept a set. ``good`` is accepted; ``refused`` is not."""

    platform: str  # the simulator's name for it (faults and counters are scoped by it)
    section: Callable[[SimulatorServer, Secrets], BaseModel]
    accept: Callable[[SimulatorServer, Secrets], object]
    good: Secrets
    refused: Secrets


def _http_profile(sim: SimulatorServer, s: Secrets) -> GenericHttpSettings:
    # the API key in the query string (where a careless message would show it) and a bearer
    # token bought with a client secret
    raw: dict[str, Any] = {
        **generic_profile(sim.generic_url),
        "headers": {},
        "query": {"api_key": s["api_key"]},
        "token": {
            "url": sim.generic_url + "oauth/token",
            "form": {"grant_type": "client_credentials", "client_id": HTTP_CLIENT,
                     "client_secret": s["client_secret"]},
        },
    }  # fmt: skip
    return GenericHttpSettings(profiles={"contract": GenericProfile.model_validate(raw)})


def _dl_section(sim: SimulatorServer, s: Secrets) -> DescartesLabsSettings:
    root = f"{sim.url}{sim.descarteslabs.prefix}"
    return DescartesLabsSettings(
        vector_url=f"{root}/vector/v2",
        storage_url=f"{root}/storage/v1",
        accounts_url=f"{root}/accounts",
        client_id=DL_CLIENT,
        refresh_token=SecretStr(s["refresh_token"]),
    )


HTTP_KEY = secret("http-api-key")
HTTP_CLIENT_SECRET = secret("http-client-secret")
SETUPS: dict[str, Setup] = {
    "geobox": Setup(
        "geobox",
        # the API key rather than the token: it travels in every URL's query string
        lambda sim, s: GeoboxSettings(base_url=sim.geobox_url, apikey=SecretStr(s["apikey"])),
        lambda sim, s: sim.geobox.configure({"apikeys": [s["apikey"]]}),
        {"apikey": secret("geobox-apikey")},
        {"apikey": secret("geobox-refused-apikey")},
    ),
    "up42": Setup(
        "up42",
        lambda sim, s: Up42Settings(
            base_url=sim.up42_url, username=UP42_USER, password=SecretStr(s["password"])
        ),
        lambda sim, s: sim.up42.configure({"users": {UP42_USER: s["password"]}}),
        {"password": secret("up42-password")},
        {"password": secret("up42-refused-password")},
    ),
    "descarteslabs": Setup(
        "descarteslabs",
        _dl_section,
        lambda sim, s: sim.descarteslabs.configure({"clients": {DL_CLIENT: s["refresh_token"]}}),
        {"refresh_token": secret("dl-refresh-token")},
        {"refresh_token": secret("dl-refused-refresh-token")},
    ),
    "isahit": Setup(
        "isahit",
        lambda sim, s: IsahitSettings(
            base_url=sim.isahit_url, access_id=ISAHIT_ID, secret_key=SecretStr(s["secret_key"])
        ),
        lambda sim, s: sim.isahit.configure({"credentials": {ISAHIT_ID: s["secret_key"]}}),
        {"secret_key": secret("isahit-secret-key")},
        {"secret_key": secret("isahit-refused-secret-key")},
    ),
    "http": Setup(
        "generic",
        _http_profile,
        lambda sim, s: sim.generic.configure(
            {"api_keys": [s["api_key"]], "clients": {HTTP_CLIENT: s["client_secret"]}}
        ),
        {"api_key": HTTP_KEY, "client_secret": HTTP_CLIENT_SECRET},
        # a refused key with a good client secret: the token is bought, the key refused
        {"api_key": secret("http-refused-api-key"), "client_secret": HTTP_CLIENT_SECRET},
    ),
}
EVERY_SECRET = frozenset(
    value for setup in SETUPS.values() for kind in (setup.good, setup.refused)
    for value in kind.values()
)  # fmt: skip


@dataclass(frozen=True)
class Scripted:
    """A remote task scripted on the simulator: what to register, and the simulator's key for
    its status and listing requests (what a fault aims at)."""

    target: Target
    key: str


@dataclass(frozen=True)
class Download:
    """A succeeded remote task with a streamed output: the output's archived name, and the
    simulator route it streams from."""

    target: Target
    name: str
    route: str


@dataclass(frozen=True)
class Lookalike:
    """An unknown remote id the platform cannot tell from a real one, and why."""

    target: Callable[[SimulatorServer], Target]
    raw_status: str  # what a status check reports instead
    reason: str


@dataclass(frozen=True)
class Case:
    """One kind of remote task of one provider."""

    name: str
    provider: str
    finished: Callable[[SimulatorServer], Scripted]  # a remote task that succeeded
    unknown: Callable[[SimulatorServer], Target]  # one the platform does not know
    download: Callable[[SimulatorServer], Download] | None = None
    no_download: str = ""  # why the kind has no streamed output
    lookalike: Lookalike | None = None


def _new() -> str:
    return uuid4().hex


BIG = 300_000  # bytes: an output long enough to be cut well short of its end
BIG_MEMBER = [{"members": [{"name": "big.tif", "size": BIG}]}]
V1_PROJECT = "sim-project"  # the simulator's default project for v1 jobs


def _geobox(sim: SimulatorServer, **fields: Any) -> Scripted:
    made = sim.geobox.add_task(**fields)
    return Scripted(Target(made.uuid), made.uuid)


def _up42_job(sim: SimulatorServer, **fields: Any) -> Scripted:
    made = sim.up42.add_job(**fields)
    return Scripted(Target(made.id, {"project_id": made.spec.project_id}), made.id)


def _up42_task(sim: SimulatorServer, **fields: Any) -> Scripted:
    made = sim.up42.add_job(**fields)
    params = {"project_id": made.spec.project_id, "job_id": made.id}
    return Scripted(Target(made.tasks[0].id, params), made.id)  # asked for through its job


def _up42_processing(sim: SimulatorServer) -> Scripted:
    made = sim.up42.add_processing()
    return Scripted(Target(made.id), made.id)


def _dl_copy(sim: SimulatorServer) -> Scripted:
    made = sim.descarteslabs.add_copy_job()
    return Scripted(Target(made.product_id, {"kind": "copy"}), made.product_id)


def _dl_export(sim: SimulatorServer, **fields: Any) -> Scripted:
    made = sim.descarteslabs.add_export(**fields)
    target = Target(made.export_id, {"kind": "export", "product_id": made.product_id})
    return Scripted(target, made.export_id)


def _dl_export_of_known_product(sim: SimulatorServer) -> Target:
    product = sim.descarteslabs.add_export().product_id
    return Target(_new(), {"kind": "export", "product_id": product})


def _isahit(sim: SimulatorServer) -> Scripted:
    made = sim.isahit.add_task()
    return Scripted(Target(made.task_id, {"project_id": ISAHIT_PROJECT}), made.task_id)


def _http(sim: SimulatorServer, **fields: Any) -> Scripted:
    made = sim.generic.add_task(**fields)
    return Scripted(Target(f"contract:{made.id}", {"project": made.script.project}), made.id)


def _download(
    script: Callable[..., Scripted], name: str, route: str, **fields: Any
) -> Callable[[SimulatorServer], Download]:
    return lambda sim: Download(script(sim, **fields).target, name, route)


CASES = [
    Case(
        "geobox",
        "geobox",
        _geobox,
        lambda sim: Target(str(uuid4())),
        _download(_geobox, "output.bin", "files/{uuid}/download/", file_size=BIG),
    ),
    Case(
        "up42-job",
        "up42",
        _up42_job,
        lambda sim: Target(_new(), {"project_id": V1_PROJECT}),
        _download(_up42_job, "big.tif", "signed/{owner}/output.tgz", tasks=BIG_MEMBER),
    ),
    Case(
        "up42-jobtask",
        "up42",
        _up42_task,
        lambda sim: Target(_new(), _up42_task(sim).target.params),  # a known job, not its task
        _download(_up42_task, "big.tif", "signed/{owner}/output.tgz", tasks=BIG_MEMBER),
    ),
    Case(
        "up42-processing",
        "up42",
        _up42_processing,
        lambda sim: Target(_new()),
        # the STAC collection the results point to, streamed when listed
        _download(_up42_processing, "collection.json", "v2/assets/stac/collections/{id}"),
    ),
    Case(
        "descarteslabs-copy",
        "descarteslabs",
        _dl_copy,
        lambda sim: Target(f"sim:{_new()}", {"kind": "copy"}),
        no_download="a copy job's only output is its status document, read whole when listed",
    ),
    Case(
        "descarteslabs-export",
        "descarteslabs",
        _dl_export,
        # an unknown product: that the platform can tell
        lambda sim: Target(_new(), {"kind": "export", "product_id": f"sim:{_new()}"}),
        _download(_dl_export, "export.geojson", "storage/v1/data/get/{key:path}", features=3000),
        lookalike=Lookalike(
            _dl_export_of_known_product,
            "404 (not finished)",
            "Descartes Labs answers 404 for an export's result until the export has finished,"
            " so an unknown export id under a product that exists looks like an export still"
            " running; the watch's timeout ends it (providers/descarteslabs/adapter.py)",
        ),
    ),
    Case(
        "isahit",
        "isahit",
        _isahit,
        lambda sim: Target(_new(), {"project_id": ISAHIT_PROJECT}),
        no_download="isahit outputs are task documents from the task list, read whole",
    ),
    Case(
        "http",
        "http",
        _http,
        lambda sim: Target(f"contract:{_new()}", {"project": "demo"}),
        _download(_http, "output.bin", "api/jobs/{job_id}/files/{name}", file_size=BIG),
    ),
]
DOWNLOADS = [case for case in CASES if case.download is not None]
