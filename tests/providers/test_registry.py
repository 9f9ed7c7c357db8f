"""The provider registry is read from the installed packages once per process, and read again
only when asked (a plugin installed after the first use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskwarden import providers
from taskwarden.config import Settings
from taskwarden.service import registration


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    providers.reset()
    yield
    providers.reset()


def install_plugin(root: Path, name: str) -> None:
    """A distribution on ``root`` (added to sys.path) declaring provider ``name``."""
    dist = root / f"{name}_provider-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-provider\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[taskwarden.providers]\n{name} = {name}_provider:build\n"
    )
    (root / f"{name}_provider.py").write_text(
        "def build(settings, client):\n    return None\n\n"
        "def check(settings, target):\n    return None\n\nbuild.validate = check\n"
    )


@pytest.mark.usefixtures("fresh_registry")
def test_many_registrations_read_the_entry_points_once(tmp_path: Path) -> None:
    """Parsing and validating a thousand registrations, for a built-in and for a plugin, reads
    the installed packages' entry points once, not once (or twice) per registration."""
    settings = Settings(data_dir=tmp_path)
    before = providers.entry_point_reads()
    for i in range(1000):
        registration.parse({"provider": "geobox", "remote_id": f"t-{i}"}, settings)
    assert providers.entry_point_reads() == before + 1


@pytest.mark.usefixtures("fresh_registry")
def test_a_plugin_installed_after_first_use_is_seen_after_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is kept: a plugin installed later is unknown until :func:`reset`, then it
    is accepted and validated, and reading it cost one more pass over the entry points."""
    settings = Settings(data_dir=tmp_path)
    registration.parse({"provider": "geobox", "remote_id": "a"}, settings)
    reads = providers.entry_point_reads()
    install_plugin(tmp_path, "acmecache")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acmecache" not in providers.names()
    providers.reset()
    for i in range(50):
        reg = registration.parse({"provider": "acmecache", "remote_id": f"j-{i}"}, settings)
        assert reg.provider == "acmecache"
    assert "acmecache" in providers.installed()
    assert providers.entry_point_reads() == reads + 1
