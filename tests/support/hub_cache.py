"""Lay out a Hugging Face Hub cache from local files, as `hf download` leaves it.

    HF_HUB_CACHE/{models,datasets}--OWNER--NAME/
        refs/REVISION                     the commit that REVISION points at
        blobs/<sha256>                    each file's bytes, once
        snapshots/<commit>/<path>         symlinks into blobs/, in the repository's layout

(huggingface_hub's file_download.py: `repo_folder_name`, `_cache_commit_hash_for_specific_revision`
and the blob/snapshot symlinks; a revision with slashes, `refs/convert/parquet`, is a nested
file under refs/.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_snapshot(hub_cache: Path, repo_type: str, repo_id: str, files: dict[str, Path],
                 revision: str = "main") -> Path:
    """Put `files` (path in the repository -> local file) in the cache as one commit of
    `repo_id` that `revision` points at; returns the snapshot folder."""
    folder = hub_cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()  # 40 hex, as git's
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name, source in files.items():
        data = source.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def add_folder(hub_cache: Path, repo_type: str, repo_id: str, folder: Path,
               revision: str = "main") -> Path:
    """Every file under `folder`, at its relative path, as one commit of `repo_id`."""
    files = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return add_snapshot(hub_cache, repo_type, repo_id, files, revision)
