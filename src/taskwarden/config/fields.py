"""Field types shared by the settings models in :mod:`.settings` and :mod:`.providers`."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, SecretStr


def _empty_is_unset(value: object) -> object:
    # `FOO=` (as compose writes `${FOO:-}`) means "not set", never "an empty credential"
    return None if value == "" else value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_unset)]


def http_url(value: str) -> str:
    """``value`` itself if it is an http(s) URL."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


# an API root that relative paths are joined to (one trailing slash), or a service root that
# paths are appended to with their own slash (none)
BaseUrl = Annotated[str, AfterValidator(lambda v: http_url(v).rstrip("/") + "/")]
RootUrl = Annotated[str, AfterValidator(lambda v: http_url(v).rstrip("/"))]


def comma_list(value: object) -> object:
    """A list from an environment variable: ``a,b`` (blanks dropped) or a JSON list."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
