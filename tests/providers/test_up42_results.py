"""UP42 results archives: what is extracted, skipped and refused, as the SDK unpacked them
(0.34.1 ``utils.py``), tarballs and zips, against the simulator and on real files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from taskwarden.errors import OutputInvalid
from taskwarden.providers.base import OutputRef
from taskwarden.providers.up42 import adapter as up42
from taskwarden.providers.up42.results import Spool, archive_name, member_chunks, scan
from taskwarden.simulator.server import SimulatorServer

from .up42_kit import archive, call, job_target, read_all, reset, sha


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    return reset(server)


ODD = [
    {"name": "latest", "kind": "symlink", "target": "data.json"},
    {"name": "copy", "kind": "hardlink", "target": "output/data.json"},
    {"name": "pipe", "kind": "fifo"},
    {"name": "tty", "kind": "device"},
]


@pytest.mark.parametrize("form", ["tgz", "zip"])
def test_regular_files_are_archived_and_the_rest_listed_as_skipped(
    sim: SimulatorServer, tmp_path: Path, form: str
) -> None:
    """Links, FIFOs and devices (the SDK skipped them without a word) are skipped refs with
    what they are; the regular files of a tarball or a zip are archived byte for byte."""
    odd = ODD if form == "tgz" else ODD[:1]  # a zip holds symlinks only
    members = [{"name": "data.json"}, {"name": "sub/b.tif", "size": 5000}, *odd]
    job = sim.up42.add_job(tasks=[{"results_format": form, "members": members}])

    async def run(provider: up42.Up42Provider) -> tuple[list[OutputRef], dict[str, bytes]]:
        refs = list(await provider.list_outputs(job_target(job)))
        return refs, await read_all(provider, job_target(job), refs)

    refs, got = call(sim, run, spool_dir=tmp_path)
    skipped = {r.name: r.skipped for r in refs if r.skipped is not None}
    expected = {
        "output/latest": "symbolic link to 'data.json'",
        "output/copy": "hard link to 'output/data.json'",
        "output/pipe": "FIFO",
        "output/tty": "character device",
    }
    if form == "zip":
        expected = {"output/latest": "symbolic link"}
    assert skipped == expected
    assert all(r.source.endswith(f"/downloads/results/#{r.name}") for r in refs if r.skipped)
    assert {n: sha(got[n]) for n in ("data.json", "sub__b.tif")} == {
        "data.json": job.results.results_sha256["data.json"],
        "sub__b.tif": job.results.results_sha256["sub/b.tif"],
    }
    assert list(tmp_path.rglob("*.tgz")) == []


@pytest.mark.parametrize(
    ("member", "error"),
    [({"name": "../../escape.sh"}, "points outside"), ({"name": "a\\b"}, "backslash")],
)
def test_a_hostile_zip_is_refused(
    sim: SimulatorServer, tmp_path: Path, member: dict[str, Any], error: str
) -> None:
    """Traversal and backslashes refuse a zip too (the SDK's ZipFile.extract hid them)."""
    job = sim.up42.add_job(tasks=[{"results_format": "zip", "members": [member]}])
    with pytest.raises(OutputInvalid, match=error):
        archive(sim, job_target(job), spool_dir=tmp_path)


def test_zip_limits_hold(sim: SimulatorServer, tmp_path: Path) -> None:
    """RESULTS_MAX_BYTES counts a zip's unpacked sizes."""
    members = [{"name": f"f{i}.bin", "size": 3000} for i in range(3)]
    job = sim.up42.add_job(tasks=[{"results_format": "zip", "members": members}])
    with pytest.raises(OutputInvalid, match="more than 5000 bytes unpacked"):
        archive(sim, job_target(job), spool_dir=tmp_path, results_max_bytes=5000)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("output/a.tif", "a.tif"),
        ("results/output/a.tif", "a.tif"),  # the SDK cuts at output/ wherever it is
        ("myoutput/a.tif", "a.tif"),  # ... even inside a segment, as its split() does
        ("output/sub/b.txt", "sub__b.txt"),  # the SDK made sub/; archive names are flat
        ("output/output/c.txt", "output__c.txt"),  # the SDK's name was "" (it crashed)
        ("x/output/y/output/z.txt", "y__output__z.txt"),  # the SDK's name was "y/"
        ("top.txt", "top.txt"),
        ("./output/./a", "a"),
    ],
)
def test_names_follow_the_sdks_output_rule_where_it_is_safe(path: str, name: str) -> None:
    """What follows the first output/ is kept (0.34.1 utils.py:131-132), all of it."""
    assert archive_name(path, "results") == name


def test_a_gnu_sparse_file_is_extracted_as_the_sdk_did(tmp_path: Path) -> None:
    """A sparse file (GNU tar -S) is a regular file to the SDK (isfile()); its bytes are
    streamed whole from the spool."""
    tar = shutil.which("tar")
    if tar is None or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True,
                                                       check=False).stdout:  # fmt: skip
        pytest.skip("GNU tar is needed to write a sparse tarball")
    (tmp_path / "output").mkdir()
    sparse = tmp_path / "output" / "holes.bin"
    with sparse.open("wb") as f:
        f.seek(300_000)
        f.write(b"data in the middle")
        f.truncate(1_000_000)
    tarball = tmp_path / "results.tgz"
    subprocess.run([tar, "-cSzf", str(tarball), "-C", str(tmp_path), "output"], check=True)
    contents = scan(tarball, 10**7, 100, "results")
    (member,) = contents.members
    assert (member.name, member.size, contents.skipped) == ("holes.bin", 1_000_000, [])
    spool = Spool(tarball, 0.0, contents, {member.index})
    body = b"".join(member_chunks(spool, member, "results"))
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(sparse.read_bytes()).hexdigest()


def test_neither_a_tarball_nor_a_zip_is_refused(tmp_path: Path) -> None:
    """Results that are neither are OutputInvalid, as the SDK's 'not a TGZ/TAR or ZIP'."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"<html>no results here</html>")
    with pytest.raises(OutputInvalid, match="neither a tarball nor a zip"):
        scan(junk, 10**6, 10, "results")
