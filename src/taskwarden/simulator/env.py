"""The ``TASKWARDEN_*`` settings that point a warden at a running simulator: every provider's
URLs under the simulator's root and the simulator's own credentials, with loopback allowed for
the URLs the platforms hand over. ``taskwarden simulate --print-env``, ``taskwarden run
--simulator`` and the demo use them; each is a setting the strict configuration accepts."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from taskwarden.simulator.generic import profile

if TYPE_CHECKING:
    from taskwarden.simulator.app import Simulation

GENERIC_PROFILE = "acme"  # the http provider's profile for the generic platform: acme:<job id>


def warden_env(simulation: Simulation, root_url: str) -> dict[str, str]:
    """The settings for a simulator serving ``simulation`` at ``root_url`` (no trailing slash)."""
    var = "TASKWARDEN_PROVIDERS__"
    geobox_token = simulation.geobox.auth.tokens[0]
    (up42_user, up42_password), *_ = simulation.up42.auth.users.items()
    (access_id, secret_key), *_ = simulation.isahit.auth.credentials.items()
    generic = profile(f"{root_url}{simulation.generic.prefix}/")
    return {
        # the simulator is on loopback, where platform-given URLs may not lead by default
        "TASKWARDEN_HTTP__ALLOW_PRIVATE_ADDRESSES": "true",
        f"{var}GEOBOX__BASE_URL": f"{root_url}{simulation.geobox.prefix}/",
        f"{var}GEOBOX__TOKEN": geobox_token,
        **simulation.descarteslabs.env(root_url),
        **simulation.earthone.env(root_url),
        f"{var}UP42__BASE_URL": f"{root_url}{simulation.up42.prefix}",
        f"{var}UP42__USERNAME": up42_user,
        f"{var}UP42__PASSWORD": up42_password,
        f"{var}ISAHIT__BASE_URL": f"{root_url}{simulation.isahit.prefix}/",
        f"{var}ISAHIT__ACCESS_ID": access_id,
        f"{var}ISAHIT__SECRET_KEY": secret_key,
        f"{var}HTTP__PROFILES": json.dumps({GENERIC_PROFILE: generic}),
    }


def export_lines(env: dict[str, str]) -> str:
    """``env`` as POSIX shell ``export`` lines, each value quoted (``eval`` or ``.`` them)."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
