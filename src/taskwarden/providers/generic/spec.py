"""What a generic HTTP profile makes of a status document: pure functions, no I/O.

:class:`Spec` is a :class:`~taskwarden.config.providers.GenericProfile` made ready to use (paths
parsed, words indexed); :func:`observe` turns a status document into an
:class:`~taskwarden.lifecycle.Observation`, and :func:`output_links` lists the outputs it names.
The adapter around them is :mod:`taskwarden.providers.generic`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from taskwarden import net
from taskwarden.config import GenericProfile
from taskwarden.errors import OutputInvalid, ProviderUnavailable
from taskwarden.jsonpath import MISSING, Path, compile_path, resolve
from taskwarden.lifecycle import Observation, Remote
from taskwarden.net import host_allowed, origin

NAME = "http"


@dataclass(frozen=True)
class Spec:
    """A profile with its paths parsed and its state words indexed (case-insensitively)."""

    name: str
    profile: GenericProfile
    words: Mapping[str, Remote]
    status: Path
    label: Path | None
    progress: Path | None
    progress_total: Path | None
    error: Path | None
    outputs: Path | None
    output_url: Path
    output_name: Path | None

    @classmethod
    def compile(cls, name: str, profile: GenericProfile) -> Spec:
        """Prepare ``profile`` (already validated, so its paths parse)."""
        words = {
            word.casefold(): Remote(state)
            for state, many in profile.states.items()
            for word in many
        }
        return cls(
            name=name,
            profile=profile,
            words=words,
            status=compile_path(profile.status_path),
            label=_maybe(profile.name_path),
            progress=_maybe(profile.progress_path),
            progress_total=_maybe(profile.progress_total_path),
            error=_maybe(profile.error_path),
            outputs=_maybe(profile.outputs_path),
            output_url=compile_path(profile.output_url_path),
            output_name=_maybe(profile.output_name_path),
        )


@dataclass(frozen=True)
class Link:
    """An output the status document names: its absolute URL, and its name if the document
    gives one (``None``: the download's ``Content-Disposition`` or the URL's last segment)."""

    url: str
    name: str | None


def observe(spec: Spec, document: Any) -> Observation:
    """What a status document says, in the canonical vocabulary.

    A document without a status at ``status_path`` (or with an object there) is
    :class:`ProviderUnavailable`: a half-written document heals on the next check, and a wrong
    path ends the watch in ``error`` with this message once the retries run out.
    """
    raw = resolve(document, spec.status)
    where = spec.profile.status_path or "(the whole document)"
    if raw is MISSING:
        raise ProviderUnavailable(
            f"http profile {spec.name!r}: the status document has no status at {where!r}",
            provider=NAME,
        )
    if isinstance(raw, dict | list):
        raise ProviderUnavailable(
            f"http profile {spec.name!r}: the status at {where!r} is a JSON"
            f" {'object' if isinstance(raw, dict) else 'array'}, not a word",
            provider=NAME,
        )
    word = raw if isinstance(raw, str) else json.dumps(raw)
    remote = spec.words.get(word.casefold(), Remote.UNKNOWN)
    error = message_at(document, spec.error)
    if remote is Remote.SUCCEEDED and spec.profile.fail_on_error and error:
        remote = Remote.FAILED
    progress = None
    if remote is Remote.RUNNING and spec.progress is not None:
        progress = progress_fraction(
            resolve(document, spec.progress),
            None if spec.progress_total is None else resolve(document, spec.progress_total),
            spec.profile.progress_max,
        )
    label = None if spec.label is None else resolve(document, spec.label)
    return Observation(
        remote=remote,
        raw_status=word,
        progress=progress,
        message=error if remote in (Remote.FAILED, Remote.CANCELLED) else None,
        name=label if isinstance(label, str) and label else None,
    )


def message_at(document: Any, path: Path | None) -> str | None:
    """The error the document reports at ``path``, as one line; None when it reports none."""
    if path is None:
        return None
    value = resolve(document, path)
    if not value:  # absent, null, false, 0, "", [] and {} all mean "no error"
        return None
    if isinstance(value, str | list | dict):
        said = net.error_message(value)
        if said:
            return said
    return net.error_message(json.dumps(value, sort_keys=True, default=str))


def progress_fraction(value: Any, total: Any, maximum: float) -> float | None:
    """``value / total`` (``total``: the document's, else ``maximum``) clamped to [0, 1];
    None when the value is not a number. Numeric strings, with or without "%", count."""
    current = _number(value)
    if current is None:
        return None
    whole = _number(total)
    if whole is None or whole <= 0:
        whole = maximum
    return min(1.0, max(0.0, current / whole))


def output_links(spec: Spec, document: Any, base: str) -> list[Link]:
    """The outputs the document lists at ``outputs_path``, resolved against ``base`` (the status
    URL). Absent or null means none; an entry without a usable URL is :class:`OutputInvalid`."""
    if spec.outputs is None:
        return []
    value = resolve(document, spec.outputs)
    if value is MISSING or value is None:
        return []
    where = spec.profile.outputs_path
    links: list[Link] = []
    for index, item in enumerate(value if isinstance(value, list) else [value]):
        name: Any = None
        if isinstance(item, str):
            url: Any = item
        elif isinstance(item, Mapping):
            url = resolve(item, spec.output_url)
            if spec.output_name is not None:
                name = resolve(item, spec.output_name)
        else:
            raise OutputInvalid(
                f"http profile {spec.name!r}: output {index} at {where!r} is neither a URL"
                f" nor an object",
                provider=NAME,
            )
        if not isinstance(url, str) or not url.strip():
            raise OutputInvalid(
                f"http profile {spec.name!r}: output {index} at {where!r} has no URL at"
                f" {spec.profile.output_url_path!r}",
                provider=NAME,
            )
        try:
            absolute = urljoin(base, url.strip())
            _check_output_url(spec, absolute, index)
        except ValueError as exc:  # urllib's verdict on, say, an unclosed IPv6 bracket
            raise OutputInvalid(
                f"http profile {spec.name!r}: output {index} has a malformed URL ({exc})",
                provider=NAME,
            ) from None
        named = net.safe_filename(name) if isinstance(name, str) else None
        links.append(Link(absolute, named))
    return links


def url_filename(url: str) -> str | None:
    """The last segment of a URL's path, decoded, when it makes a file name."""
    return net.safe_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))


def _check_output_url(spec: Spec, url: str, index: int) -> None:
    scheme, host, _ = origin(url)
    if scheme not in ("http", "https") or not host:
        raise OutputInvalid(
            f"http profile {spec.name!r}: output {index} is not an http(s) URL", provider=NAME
        )
    if not host_allowed(host, spec.profile.output_hosts):
        raise OutputInvalid(
            f"http profile {spec.name!r}: output {index} is on {host}, which is not in"
            " output_hosts",
            provider=NAME,
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().removesuffix("%"))
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _maybe(text: str | None) -> Path | None:
    return None if text is None else compile_path(text)
