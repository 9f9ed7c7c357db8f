"""The API does what its OpenAPI document says: schemathesis (pinned in the test extra) runs
every check in all its phases (examples, coverage, fuzzing, and stateful sequences along the
document's links) against the real app, served by uvicorn on loopback over the session Redis.

It runs twice: with the token and ``READ_AUTH`` on (every call but health, readiness and the
dashboard needs it), and without a token with reads open (writes are refused). Generation is
deterministic and bounded (``MAX_EXAMPLES`` per operation), so a run is repeatable and takes
seconds. The hooks in ``tests/openapi_hooks.py`` keep positive cases clear of the two refusals
no schema can state (a provider's own target rules, a cursor from another query).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskwarden.api import create_app
from taskwarden.config.settings import load_settings
from tests.test_api import TOKEN, serve

MAX_EXAMPLES = 30
HOOKS = Path(__file__).with_name("openapi_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# /readyz answers 503 when the warden is not ready, as documented; here no beat or worker runs.
# An event stream never ends: each request reads it for a tenth of a second (a heartbeat comes
# every 0.05 s), then stops; fewer of them are made, as each costs that time.
CONFIG = """\
hooks = "{hooks}"
workers = 1
request-timeout = 10

[generation]
database = "none"

[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-path = "/v1/events"
request-timeout = 0.1
generation.max-examples = 10
"""


@pytest.mark.timeout(600)  # about 40 s of CPU a run; far longer on a machine shared with others
@pytest.mark.parametrize("read_auth", [True, False], ids=["token-read-auth", "no-token-reads-open"])
def test_the_api_does_what_its_openapi_document_says(
    redis_url: str, tmp_path: Path, read_auth: bool
) -> None:
    """Schemathesis finds no failure of any check, stateless or stateful: every status code,
    header and body is documented, schema-valid requests are accepted, schema-violating ones
    refused, and an operation documented as needing the token refuses a call without it."""
    settings = load_settings(
        data_dir=tmp_path,
        archive_url=(tmp_path / "archive").as_uri(),
        api={"token": TOKEN, "read_auth": read_auth},
        # any schema-valid webhook URL is taken: registration refuses private literals otherwise
        http={"allow_private_addresses": True},
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("{hooks}", str(HOOKS)))
    with serve(create_app(settings, redis_url, sse_heartbeat=0.05)) as client:
        args = [str(SCHEMATHESIS), "--no-color", "--config-file", str(config), "run",
                f"{client.base_url}/openapi.json", "--checks", "all",
                "--generation-deterministic", "--max-examples", str(MAX_EXAMPLES)]  # fmt: skip
        if read_auth:
            args += ["--header", f"Authorization: Bearer {TOKEN}"]
        run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "NO_COLOR": "1"}, check=False)  # fmt: skip
    (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-25000:] + run.stderr[-5000:]
