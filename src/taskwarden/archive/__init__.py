"""The archive: outputs streamed into object storage under their final keys, with a checksummed
manifest written last (:mod:`.manifest`); the rules for keys (:mod:`.names`); and the storage
itself (:mod:`.storage`, the only obstore user).
"""

from taskwarden.archive.manifest import (
    MANIFEST_NAME,
    SNAPSHOTS,
    Manifest,
    ManifestOutput,
    archive_outputs,
    manifest_key,
    read_manifest,
    read_manifest_sync,
    run_folder,
)
from taskwarden.archive.names import Names, check_segments, safe_name, safe_path, unique_name
from taskwarden.archive.storage import (
    ArchiveStore,
    StoredObject,
    list_objects,
    open_store,
    probe,
    read_object,
    settle,
    sweep_staging,
)

__all__ = [
    "MANIFEST_NAME",
    "SNAPSHOTS",
    "ArchiveStore",
    "Manifest",
    "ManifestOutput",
    "Names",
    "StoredObject",
    "archive_outputs",
    "check_segments",
    "list_objects",
    "manifest_key",
    "open_store",
    "probe",
    "read_manifest",
    "read_manifest_sync",
    "read_object",
    "run_folder",
    "safe_name",
    "safe_path",
    "settle",
    "sweep_staging",
    "unique_name",
]
