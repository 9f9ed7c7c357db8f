"""The archive on real stores: a local directory, obstore's memory store, and S3 (moto's server).

Outputs come from ``Platform``, a small in-test Provider that streams deterministic bytes the way
an HTTP adapter does (small pieces, an announced length); it stands in for a remote platform, not
for any of taskwarden's own code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import obstore
import pytest
from obstore.exceptions import BaseError
from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store
from pydantic import SecretStr

from taskwarden.archive import manifest as archive
from taskwarden.archive import names as archive_names
from taskwarden.archive import storage as archive_store
from taskwarden.archive.manifest import Manifest
from taskwarden.archive.storage import ArchiveStore
from taskwarden.config.settings import S3Settings, Settings
from taskwarden.errors import (
    ConfigError,
    InvalidRegistration,
    OutputInvalid,
    ProviderUnavailable,
    RetryableError,
    StorageUnavailable,
)
from taskwarden.lifecycle import Observation, Remote
from taskwarden.providers.base import OutputRef, OutputStream, Target

MiB = 1024 * 1024
CHUNK = 5 * MiB  # the smallest chunk S3 accepts, so multi-part cases stay small for moto
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-per-seed bytes."""
    block = hashlib.sha256(str(seed).encode()).digest() + bytes(range(256))
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Out:
    """One output of the platform: inline, or streamed in ``piece``-sized pieces."""

    name: str
    data: bytes
    inline: bool = False
    announced: int | None = -1  # -1: the true length; None: not announced
    fail_after: int | None = None  # raise ProviderUnavailable once this many bytes were sent
    content_type: str | None = "application/octet-stream"
    filename: str | None = None
    piece: int = 16 * 1024
    skipped: str | None = None  # a reason: listed as skipped, never to be opened


@dataclass
class Platform:
    """A remote platform whose finished task has ``outputs``; counts what it was asked."""

    outputs: list[Out]
    name: str = "adapter"  # not the layout's segment: archive_outputs gets provider_name
    list_calls: int = 0
    opened: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # bytes yielded per output name
    barrier: asyncio.Barrier | None = None

    async def fetch_status(self, target: Target) -> Observation:
        return Observation(Remote.SUCCEEDED, "DONE")

    async def list_outputs(self, target: Target) -> Sequence[OutputRef]:
        self.list_calls += 1
        if self.barrier is not None:
            await self.barrier.wait()
        return [
            OutputRef(
                name=out.name,
                source=f"test://{target.remote_id}/{index}",
                content=out.data if out.inline else None,
                content_type=out.content_type,
                key=str(index),
                skipped=out.skipped,
            )
            for index, out in enumerate(self.outputs)
        ]

    @asynccontextmanager
    async def open_output(self, target: Target, ref: OutputRef) -> AsyncIterator[OutputStream]:
        out = self.outputs[int(ref.key)]
        self.opened.append(ref.name)
        length = len(out.data) if out.announced == -1 else out.announced
        yield OutputStream(
            chunks=self._chunks(out),
            content_type=out.content_type,
            length=length,
            filename=out.filename,
        )

    async def _chunks(self, out: Out) -> AsyncIterator[bytes]:
        for start in range(0, len(out.data), out.piece):
            if out.fail_after is not None and start >= out.fail_after:
                raise ProviderUnavailable("connection reset by platform", provider=self.name)
            yield out.data[start : start + out.piece]
            self.sent[out.name] = min(start + out.piece, len(out.data))
            await asyncio.sleep(0)

    async def abort(self, target: Target) -> None:
        return None


def run_archive(
    store: ArchiveStore, platform: Platform, remote_id: str = "r1", **kw: Any
) -> Manifest:
    options: dict[str, Any] = {
        "watch_id": "w-1",
        "provider_name": "testplat",
        "final_status": "DONE",
        "now": NOW,
        "chunk_size": CHUNK,
    }
    options.update(kw)
    return asyncio.run(archive.archive_outputs(store, platform, Target(remote_id), **options))


# --- stores -------------------------------------------------------------------------------------


@pytest.fixture
def s3_client(moto_endpoint: str) -> Iterator[Any]:
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    yield client
    client.close()


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"tw-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def s3_settings(endpoint: str, url: str, tmp_path: Path) -> Settings:
    s3 = S3Settings(
        endpoint_url=endpoint,
        access_key_id=SecretStr("test"),
        secret_access_key=SecretStr("test"),
        allow_http=True,
    )
    return Settings(data_dir=tmp_path, archive_url=url, s3=s3)


@pytest.fixture(params=["file", "memory", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ArchiveStore:
    """The archive on each kind of store; the S3 one under a key prefix."""
    if kind == "file":
        return archive_store.open_store(
            Settings(data_dir=tmp_path, archive_url=(tmp_path / "arch").as_uri())
        )
    if kind == "memory":
        return archive_store.open_store(Settings(data_dir=tmp_path, archive_url="memory:///"))
    endpoint = request.getfixturevalue("moto_endpoint")
    name = request.getfixturevalue("bucket")
    return archive_store.open_store(s3_settings(endpoint, f"s3://{name}/runs/prod", tmp_path))


def keys(store: ArchiveStore) -> list[str]:
    return [obj.key for obj in archive_store.list_objects(store)]


def assert_no_leftovers(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """No staging files on disk, no pending multipart uploads on S3."""
    if kind == "file":
        files = [p.name for p in (tmp_path / "arch").rglob("*") if p.is_file()]
        assert not [f for f in files if "#" in f], files
    if kind == "s3":
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("bucket")
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- archiving ----------------------------------------------------------------------------------


def test_outputs_and_manifest_land_with_correct_bytes(store: ArchiveStore, kind: str) -> None:
    """Inline and streamed outputs are stored byte for byte, and the manifest records their sizes and sha256."""
    inline = b'{"area": 42}'
    streamed = pattern(300 * 1024 + 7, seed=1)
    platform = Platform(
        [
            Out("summary.json", inline, inline=True, content_type="application/json"),
            Out("raster.tif", streamed, content_type="image/tiff"),
        ]
    )
    manifest = run_archive(store, platform, watch_id="w-42", final_status="COMPLETED")

    base = store.key("testplat", "r1")
    assert keys(store) == sorted(
        [f"{base}/summary.json", f"{base}/raster.tif", f"{base}/manifest.json"]
    )
    assert archive_store.read_object(store, f"{base}/summary.json") == inline
    assert archive_store.read_object(store, f"{base}/raster.tif") == streamed
    assert [
        (o.name, o.key, o.size, o.sha256, o.content_type, o.source) for o in manifest.outputs
    ] == [
        (
            "summary.json",
            f"{base}/summary.json",
            len(inline),
            sha(inline),
            "application/json",
            "test://r1/0",
        ),
        (
            "raster.tif",
            f"{base}/raster.tif",
            len(streamed),
            sha(streamed),
            "image/tiff",
            "test://r1/1",
        ),
    ]
    stored = json.loads(archive_store.read_object(store, f"{base}/manifest.json"))
    assert stored["watch_id"] == "w-42" and stored["provider"] == "testplat"
    assert stored["remote_id"] == "r1" and stored["final_status"] == "COMPLETED"
    assert stored["archived_at"] == "2026-01-02T03:04:05Z"
    assert archive.read_manifest_sync(store, "testplat", "r1") == manifest
    assert asyncio.run(archive.read_manifest(store, "testplat", "r1")) == manifest
    if kind == "s3":
        assert base == "runs/prod/testplat/r1"


def test_skipped_outputs_are_listed_in_the_manifest_and_never_opened(
    store: ArchiveStore,
) -> None:
    """A ref the adapter marks skipped lands in the manifest's skipped list with its reason and
    source; it is not opened and no object is written for it."""
    platform = Platform(
        [
            Out("scene.tif", pattern(1000)),
            Out("output/latest", b"", skipped="symbolic link to 'scene.tif'"),
        ]
    )
    manifest = run_archive(store, platform)
    base = store.key("testplat", "r1")
    assert keys(store) == sorted([f"{base}/scene.tif", f"{base}/manifest.json"])
    assert platform.opened == ["scene.tif"]
    assert [(s.name, s.reason, s.source) for s in manifest.skipped] == [
        ("output/latest", "symbolic link to 'scene.tif'", "test://r1/1")
    ]
    stored = json.loads(archive_store.read_object(store, f"{base}/manifest.json"))
    assert stored["skipped"] == [
        {"name": "output/latest", "reason": "symbolic link to 'scene.tif'", "source": "test://r1/1"}
    ]


def test_a_manifest_written_before_skipped_existed_still_reads(store: ArchiveStore) -> None:
    """A manifest without the skipped key parses, with an empty list."""
    manifest = run_archive(store, Platform([Out("a.bin", b"x")]))
    body = json.loads(manifest.model_dump_json())
    del body["skipped"]
    assert Manifest.model_validate(body).skipped == []


def test_a_manifest_written_before_final_state_existed_reads_as_succeeded(
    store: ArchiveStore,
) -> None:
    """Before final_state, only successes were archived: a manifest without it says so."""
    body = json.loads(run_archive(store, Platform([Out("a.bin", b"x")])).model_dump_json())
    assert body.pop("final_state") == "succeeded"
    assert Manifest.model_validate(body).final_state == "succeeded"


@dataclass
class DiagnosedPlatform(Platform):
    """A platform whose failed task left ``diagnostics`` behind."""

    diagnostics: list[Out] = field(default_factory=list)

    async def list_diagnostics(self, target: Target) -> Sequence[OutputRef]:
        self.outputs = self.diagnostics  # opened by index, as outputs are
        return await self.list_outputs(target)


def test_diagnostics_are_archived_for_another_final_state_in_its_folder(
    store: ArchiveStore,
) -> None:
    """For a final state other than succeeded, what list_diagnostics lists is archived (opened
    like any output) with that state in the manifest, in the folder the run is given; a
    provider without list_diagnostics is a programming error, not an empty archive."""
    platform = DiagnosedPlatform([Out("result.tif", b"never")], diagnostics=[
        Out("job.json", b"{}", inline=True), Out("tasks/t1/log.txt", b"Traceback")])  # fmt: skip
    folder = archive.run_folder("timed_out", 1_767_323_045.25)
    assert folder == "timed_out/20260102T030405.250Z"
    manifest = run_archive(store, platform, final_state="timed_out", folder=folder)
    assert manifest.final_state == "timed_out" and platform.opened == ["tasks/t1/log.txt"]
    base = store.key("testplat", "r1", folder)
    assert [o.key for o in manifest.outputs] == [f"{base}/job.json", f"{base}/tasks/t1/log.txt"]
    assert archive.read_manifest_sync(store, "testplat", "r1", folder) == manifest
    assert archive.read_manifest_sync(store, "testplat", "r1") is None
    assert archive.run_folder("failed", 1.0) == ""
    with pytest.raises(ValueError, match="lists no diagnostics"):
        run_archive(store, Platform([Out("a", b"x")]), remote_id="r2", final_state="failed")


def test_s3_upload_is_multipart_with_content_type(
    moto_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """A stream larger than the chunk size goes up as a multipart upload (ETag "-3") with its content type."""
    store = archive_store.open_store(s3_settings(moto_endpoint, f"s3://{bucket}", tmp_path))
    data = pattern(2 * CHUNK + 12345, seed=2)
    manifest = run_archive(
        store, Platform([Out("big.bin", data, piece=64 * 1024, content_type="image/tiff")])
    )
    head = s3_client.head_object(Bucket=bucket, Key="testplat/r1/big.bin")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentType"] == "image/tiff"
    body = s3_client.get_object(Bucket=bucket, Key="testplat/r1/big.bin")["Body"].read()
    assert sha(body) == sha(data) == manifest.outputs[0].sha256


def test_local_store_rechunks_large_stream(tmp_path: Path) -> None:
    """A multi-chunk stream with an odd tail lands intact on disk, with no staging files left."""
    store = archive_store.open_store(
        Settings(data_dir=tmp_path, archive_url=(tmp_path / "arch").as_uri())
    )
    data = pattern(2 * CHUNK + 999, seed=3)
    manifest = run_archive(store, Platform([Out("big.bin", data, piece=100_003)]))
    on_disk = tmp_path / "arch" / "testplat" / "r1" / "big.bin"
    assert on_disk.read_bytes() == data
    assert manifest.outputs[0].size == len(data)
    assert sorted(p.name for p in on_disk.parent.iterdir()) == ["big.bin", "manifest.json"]


def test_empty_stream_is_archived(store: ArchiveStore) -> None:
    """A zero-byte output is archived as an empty object."""
    manifest = run_archive(store, Platform([Out("empty.txt", b"")]))
    assert archive_store.read_object(store, manifest.outputs[0].key) == b""
    assert (manifest.outputs[0].size, manifest.outputs[0].sha256) == (0, sha(b""))


@pytest.mark.parametrize(
    ("actual", "announced"),
    [
        (CHUNK + MiB, CHUNK + 2 * MiB),  # truncated after one part was uploaded
        (1000, 1001),  # truncated, a single part
        (CHUNK + MiB, CHUNK),  # more than announced
    ],
)
def test_length_mismatch_leaves_no_object_and_no_manifest(
    store: ArchiveStore,
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    actual: int,
    announced: int,
) -> None:
    """A stream whose size differs from its Content-Length raises OutputInvalid, leaving no object under its key and no manifest."""
    good = pattern(2000, seed=4)
    platform = Platform(
        [
            Out("good.bin", good),
            Out("bad.bin", pattern(actual, seed=5), announced=announced, piece=256 * 1024),
        ]
    )
    with pytest.raises(OutputInvalid, match="announced"):
        run_archive(store, platform)
    assert platform.sent["bad.bin"] <= announced + 256 * 1024  # an overlong stream is cut short
    assert keys(store) == [store.key("testplat", "r1", "good.bin")]
    assert archive.read_manifest_sync(store, "testplat", "r1") is None
    assert_no_leftovers(kind, tmp_path, request)


def test_exception_mid_stream_leaves_no_partial_object(
    store: ArchiveStore, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A platform failing after a part was uploaded propagates its own error and leaves no partial object."""
    platform = Platform(
        [Out("big.bin", pattern(3 * CHUNK, seed=6), fail_after=CHUNK + MiB, piece=256 * 1024)]
    )
    with pytest.raises(ProviderUnavailable, match="connection reset"):
        run_archive(store, platform)
    assert keys(store) == []
    assert_no_leftovers(kind, tmp_path, request)


def test_second_archive_returns_existing_manifest(store: ArchiveStore) -> None:
    """Archiving again returns the first manifest without asking the platform or rewriting anything."""
    platform = Platform([Out("a.bin", pattern(5000, seed=7)), Out("b.json", b"{}", inline=True)])
    first = run_archive(store, platform, watch_id="w-first")
    before = {meta["path"]: meta["e_tag"] for meta in obstore.list(store.store).collect()}

    second = run_archive(store, platform, watch_id="w-second", now=NOW.timestamp() + 3600)

    assert second == first and second.watch_id == "w-first"
    assert (platform.list_calls, platform.opened) == (1, ["a.bin"])
    assert {meta["path"]: meta["e_tag"] for meta in obstore.list(store.store).collect()} == before


def test_concurrent_archives_agree_on_one_manifest(store: ArchiveStore) -> None:
    """Two archives racing on the same remote task both return the one manifest that won the create."""
    platform = Platform([Out("a.bin", pattern(4000, seed=8))])

    async def race() -> list[Manifest]:
        # Both have seen "no manifest yet" before either writes.
        platform.barrier = asyncio.Barrier(2)
        return list(
            await asyncio.gather(
                *(
                    archive.archive_outputs(
                        store,
                        platform,
                        Target("r1"),
                        watch_id=w,
                        provider_name="testplat",
                        final_status="DONE",
                        now=NOW,
                        chunk_size=CHUNK,
                    )
                    for w in ("w-a", "w-b")
                )
            )
        )

    one, two = asyncio.run(race())
    assert platform.list_calls == 2
    assert one == two
    assert archive.read_manifest_sync(store, "testplat", "r1") == one


PERSIAN = "\u0646\u0642\u0634\u0647\u200c\u0647\u0627.tif"  # "maps.tif"
HOSTILE = [
    ("a\\b", "a/b"),  # a Windows separator is a folder too
    (".hidden", "hidden"),
    ("", "output"),
    ("manifest.json", "manifest-2.json"),
    ("timed_out", "timed_out-2"),  # the folder of time-out snapshots
    ("same.txt", "same.txt"),
    ("same.txt", "same-2.txt"),
    ("dir/same.txt", "dir/same.txt"),
    ("dir", "dir-2"),  # a file where a folder is
    ("dir/same.txt/x", "dir/same.txt-2/x"),  # a folder where a file is
    ("x\x00y\n\x7fz", "xyz"),
    ("job/.git/con#fig", "job/git/con_fig"),  # each segment cleaned like a name
    ("frame#1", "frame_1"),
    (PERSIAN, PERSIAN),  # a zero-width non-joiner is a format character, not a control: kept
]


def test_hostile_output_names_stay_under_the_prefix(
    store: ArchiveStore, kind: str, tmp_path: Path
) -> None:
    """Backslash, hidden, empty, reserved, repeated, file-versus-folder and control-character names become distinct safe keys (folders included) under the archive's own directory."""
    platform = Platform(
        [
            Out(name, name.encode() + b"!", inline=index % 2 == 0)
            for index, (name, _) in enumerate(HOSTILE)
        ]
    )
    manifest = run_archive(store, platform)

    base = store.key("testplat", "r1")
    assert [o.name for o in manifest.outputs] == [expected for _, expected in HOSTILE]
    assert [o.key for o in manifest.outputs] == [f"{base}/{expected}" for _, expected in HOSTILE]
    assert sorted(keys(store)) == sorted(
        [o.key for o in manifest.outputs] + [f"{base}/manifest.json"]
    )
    for output, (name, _) in zip(manifest.outputs, HOSTILE, strict=True):
        assert archive_store.read_object(store, output.key) == name.encode() + b"!"
    assert archive.read_manifest_sync(store, "testplat", "r1") == manifest
    if kind == "file":
        root = tmp_path / "arch" / "testplat" / "r1"
        everything = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert all(root in p.parents for p in everything), everything


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../etc/passwd", "'..' segment"),
        ("..", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'..' segment"),
        ("C:\\..\\x", "'..' segment"),
        ("/etc/passwd", "absolute or has an empty segment"),
        ("a//b", "absolute or has an empty segment"),
        ("a/", "absolute or has an empty segment"),
        ("/".join(["d"] * 17), "deeper than the 16 allowed"),
        ("/".join(["e" * 200] * 3), "longer than the 512 allowed"),
    ],
)
def test_unsafe_output_paths_are_refused_before_any_download(
    store: ArchiveStore, name: str, why: str
) -> None:
    """A name that would climb out of its folder, is absolute, has empty segments or is too deep or long fails the archive as OutputInvalid before any output is opened or written."""
    platform = Platform([Out("first.bin", b"x" * 100), Out(name, b"y")])
    with pytest.raises(OutputInvalid, match=why):
        run_archive(store, platform)
    assert platform.opened == [] and keys(store) == []


def test_platform_filename_overrides_ref_name(store: ArchiveStore) -> None:
    """When the platform names the file (Content-Disposition), that name is used, sanitised."""
    manifest = run_archive(store, Platform([Out("42", b"data", filename="../result.csv")]))
    assert manifest.outputs[0].name == "result.csv"


def test_platform_filename_keeps_the_adapters_folder(store: ArchiveStore) -> None:
    """A file name the platform sends replaces the last segment of the adapter's path only: the folder stays, and a path in the header is no folder."""
    platform = Platform([Out("job-1/result", b"data", filename="a/b/out.tif")])
    assert run_archive(store, platform).outputs[0].name == "job-1/out.tif"


@pytest.mark.parametrize("remote_id", ["../x", "a/b", "a\\b", "..", "", "x\x00"])
def test_hostile_remote_ids_are_refused(store: ArchiveStore, remote_id: str) -> None:
    """A remote id that could escape its directory is refused before the platform is asked or anything is written."""
    platform = Platform([Out("a.bin", b"x")])
    with pytest.raises(InvalidRegistration, match="remote_id"):
        run_archive(store, platform, remote_id=remote_id)
    assert (platform.list_calls, keys(store)) == (0, [])


def test_corrupt_manifest_is_output_invalid(store: ArchiveStore) -> None:
    """A manifest.json that is not a manifest is reported as OutputInvalid, not taken for a missing one."""
    obstore.put(store.store, store.key("testplat", "r1", "manifest.json"), b"not json")
    with pytest.raises(OutputInvalid, match="manifest"):
        archive.read_manifest_sync(store, "testplat", "r1")


def test_small_chunk_size_is_refused(store: ArchiveStore) -> None:
    """A chunk size below S3's minimum part size is refused up front."""
    with pytest.raises(ValueError, match="chunk_size"):
        run_archive(store, Platform([Out("a", b"x")]), chunk_size=MiB)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("a/b/c.txt", "c.txt"),
        ("C:\\Users\\x\\file.doc", "file.doc"),
        ("...", "output"),
        ("  spaced  ", "spaced"),
        ("x" * 300 + ".tif", "x" * 196 + ".tif"),
        ("y" * 300, "y" * 200),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    """Output names reduce to one harmless, bounded segment."""
    assert archive_names.safe_name(name) == expected


def test_unique_name_counts_before_the_extension() -> None:
    """Repeated names get -2, -3 before the extension, skipping names already taken."""
    used = {"manifest.json", "a-2.txt"}
    assert [
        archive_names.unique_name(n, used) for n in ["a.txt", "a.txt", "a.txt", "README", "README"]
    ] == [
        "a.txt",
        "a-3.txt",
        "a-4.txt",
        "README",
        "README-2",
    ]


# --- opening stores and failures ----------------------------------------------------------------


def test_open_store_schemes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each supported scheme opens the right store with its key prefix; file:// creates its directory."""
    target = tmp_path / "new" / "archive"
    opened = archive_store.open_store(Settings(data_dir=tmp_path, archive_url=target.as_uri()))
    assert isinstance(opened.store, LocalStore) and target.is_dir() and opened.prefix == ""
    default = archive_store.open_store(Settings(data_dir=tmp_path / "data"))
    assert isinstance(default.store, LocalStore) and (tmp_path / "data" / "archive").is_dir()
    memory = archive_store.open_store(Settings(data_dir=tmp_path, archive_url="memory:///a/b/"))
    assert isinstance(memory.store, MemoryStore) and memory.key("p", "r") == "a/b/p/r"
    s3 = archive_store.open_store(s3_settings("http://127.0.0.1:9", "s3://bkt/x//y/", tmp_path))
    assert isinstance(s3.store, S3Store) and s3.prefix == "x/y"
    gcs = archive_store.open_store(Settings(data_dir=tmp_path, archive_url="gs://bkt/pre"))
    assert isinstance(gcs.store, GCSStore) and gcs.store.prefix == "pre"
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devaccount")
    azure = archive_store.open_store(Settings(data_dir=tmp_path, archive_url="az://container/pre"))
    assert isinstance(azure.store, AzureStore)


@pytest.mark.parametrize(
    ("url", "s3", "needle"),
    [
        ("ftp://host/x", {}, "TASKWARDEN_ARCHIVE_URL"),
        ("s3:///nobucket", {}, "TASKWARDEN_ARCHIVE_URL"),
        ("s3://bkt/../up", {}, "TASKWARDEN_ARCHIVE_URL"),
        ("file://remotehost/x", {}, "TASKWARDEN_ARCHIVE_URL"),
        ("s3://bkt", {"endpoint_url": "http://127.0.0.1:9"}, "TASKWARDEN_S3__ALLOW_HTTP"),
        ("s3://bkt", {"access_key_id": "k"}, "TASKWARDEN_S3__SECRET_ACCESS_KEY"),
    ],
)
def test_open_store_refuses_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, s3: dict[str, Any], needle: str
) -> None:
    """Unsupported schemes and unsafe or incomplete S3 settings are a ConfigError naming the variable to set."""
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(ConfigError, match=needle):
        archive_store.open_store(
            Settings(data_dir=tmp_path, archive_url=url, s3=S3Settings.model_validate(s3))
        )


class Unavailable(BaseHTTPRequestHandler):
    def do_any(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST = do_HEAD = do_any

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def unavailable_endpoint() -> Iterator[str]:
    """A loopback HTTP server answering 503 to everything."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("failure", ["refused", "503"])
def test_store_failures_are_storage_unavailable(
    tmp_path: Path, request: pytest.FixtureRequest, failure: str
) -> None:
    """Connection refused and 5xx from the store surface as a retryable StorageUnavailable carrying obstore's error."""
    endpoint = (
        f"http://127.0.0.1:{closed_port()}"
        if failure == "refused"
        else request.getfixturevalue("unavailable_endpoint")
    )
    store = archive_store.open_store(s3_settings(endpoint, "s3://bkt/p", tmp_path))
    platform = Platform([Out("a.bin", b"x" * 100)])
    with pytest.raises(StorageUnavailable) as caught:
        run_archive(store, platform)
    assert isinstance(caught.value, RetryableError)
    assert isinstance(caught.value.__cause__, BaseError)
    assert platform.list_calls == 0  # the manifest check failed first


@pytest.mark.parametrize("inline", [True, False])
def test_refused_write_is_storage_unavailable(tmp_path: Path, inline: bool) -> None:
    """A store that refuses an output's write (a directory squats its key) raises StorageUnavailable with obstore's error as cause, and writes no manifest."""
    store = archive_store.open_store(
        Settings(data_dir=tmp_path, archive_url=(tmp_path / "arch").as_uri())
    )
    (tmp_path / "arch" / "testplat" / "r1" / "a.bin" / "squatter").mkdir(parents=True)
    with pytest.raises(StorageUnavailable, match=r"a\.bin") as caught:
        run_archive(store, Platform([Out("a.bin", b"x" * 100, inline=inline)]))
    assert isinstance(caught.value.__cause__, BaseError)
    assert archive.read_manifest_sync(store, "testplat", "r1") is None


# --- process-level behaviour --------------------------------------------------------------------

SETTLE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pydantic import SecretStr
    from taskwarden.archive import manifest as archive
    from taskwarden.archive import storage as archive_store
    from taskwarden.config.settings import S3Settings, Settings
    from taskwarden.providers.base import OutputRef, Target

    class Platform:
        name = "testplat"
        async def list_outputs(self, target):
            return [OutputRef(name=f"o{i}", source="s", content=b"x" * 100) for i in range(8)]

    async def main():
        s3 = S3Settings(endpoint_url=sys.argv[1], access_key_id=SecretStr("t"),
                        secret_access_key=SecretStr("t"), allow_http=True)
        store = archive_store.open_store(Settings(archive_url=sys.argv[2], s3=s3))
        await archive.archive_outputs(store, Platform(), Target(sys.argv[3]), watch_id="w",
                                      provider_name="testplat", final_status="DONE", now=0.0,
                                      chunk_size=5 * 2**20)
        await archive_store.settle()

    asyncio.run(main())
    """
)


def test_settle_lets_the_process_exit_cleanly(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """A process that archives to S3, settles and exits returns 0 (without settle, about one exit in four aborts with SIGABRT)."""
    script = tmp_path / "settle.py"
    script.write_text(SETTLE_SCRIPT)
    env = {**os.environ, "TASKWARDEN_DATA_DIR": str(tmp_path)}

    def one(run: int) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), moto_endpoint, f"s3://{bucket}", f"run{run}"]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env, check=False
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(12)))
    assert [r.returncode for r in results] == [0] * 12, [
        r.stderr[-2000:] for r in results if r.returncode
    ]


MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, sys
    from contextlib import asynccontextmanager
    from taskwarden.archive import manifest as archive
    from taskwarden.archive import storage as archive_store
    from taskwarden.config.settings import Settings
    from taskwarden.providers.base import OutputRef, OutputStream, Target

    SIZE, PIECE = 64 * 2**20, 64 * 1024
    piece = bytes(range(256)) * (PIECE // 256)

    async def chunks():
        # A fresh object per piece, as an HTTP client yields: obstore keeps references to the
        # buffers it is given, so one object yielded over and over would hide any buffering.
        for index in range(SIZE // PIECE):
            yield index.to_bytes(4, "big") + piece[4:]

    class Platform:
        name = "testplat"
        async def list_outputs(self, target):
            return [OutputRef(name="big.bin", source="s")]
        @asynccontextmanager
        async def open_output(self, target, ref):
            yield OutputStream(chunks=chunks(), length=SIZE)

    def peak_mib():
        # VmHWM belongs to this process image; ru_maxrss would include the parent's, inherited
        # through fork and kept across exec.
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    async def main():
        store = archive_store.open_store(Settings(archive_url=sys.argv[1]))
        before = peak_mib()
        manifest = await archive.archive_outputs(store, Platform(), Target("r1"), watch_id="w",
                                                 provider_name="testplat", final_status="DONE", now=0.0,
                                                 chunk_size=int(sys.argv[2]))
        after = peak_mib()
        expected = hashlib.sha256()
        for index in range(SIZE // PIECE):
            expected.update(index.to_bytes(4, "big") + piece[4:])
        print(json.dumps({"before": before, "after": after, "size": manifest.outputs[0].size,
                          "sha_ok": manifest.outputs[0].sha256 == expected.hexdigest()}))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_streaming_memory_stays_bounded(tmp_path: Path) -> None:
    """Streaming 64 MiB into the local store raises the process's peak memory by well under the object's size."""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    root = tmp_path / "arch"
    argv = [sys.executable, str(script), root.as_uri(), str(8 * MiB)]
    env = {**os.environ, "TASKWARDEN_DATA_DIR": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=100, env=env, check=True)
    figures = json.loads(done.stdout)
    assert figures["size"] == 64 * MiB and figures["sha_ok"]
    assert (root / "testplat" / "r1" / "big.bin").stat().st_size == 64 * MiB
    assert figures["after"] - figures["before"] < 32, figures  # MiB: half the object


@pytest.mark.parametrize(
    ("out", "fetched"),
    [
        # announced too big: refused before a byte is read
        (Out("huge.bin", pattern(5000, seed=9)), 0),
        # announced nothing, but streams too much: stopped as soon as it passes the limit
        (Out("sneaky.bin", pattern(50_000, seed=10), announced=None, piece=1000), 5000),
        # inline content over the limit
        (Out("fat.json", pattern(5000, seed=11), inline=True), 0),
    ],
)
def test_outputs_over_the_size_limit_are_refused(tmp_path: Path, out: Out, fetched: int) -> None:
    """An output larger than max_bytes fails with a message naming the setting, stores nothing,
    and is not downloaded past the limit."""
    store = archive_store.open_store(
        Settings(data_dir=tmp_path, archive_url=(tmp_path / "a").as_uri())
    )
    platform = Platform([out])
    with pytest.raises(OutputInvalid, match="TASKWARDEN_MAX_OUTPUT_BYTES"):
        run_archive(store, platform, max_bytes=4096)
    assert platform.sent.get(out.name, 0) <= fetched
    assert archive_store.list_objects(store) == []
