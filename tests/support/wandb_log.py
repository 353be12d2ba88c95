"""Read an offline W&B run's transaction log (`run-<id>.wandb`) back into its records.

wandb 0.31 writes an offline run as this one file (its Python reader went with the move to
its Go core). The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1,
version 0), then 32 KiB blocks of chunks, each `<crc32 u32><length u16><type u8><payload>`,
type 1 a whole record, 2/3/4 the first/middle/last piece of one; a block's tail shorter than a
chunk header is padding. Each record is a protobuf `Record` of wandb's own schema, decoded
here with wandb's generated classes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending, found = 7, b"", []
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        start = position + CHUNK_HEADER.size
        piece = data[start:start + length]
        position = start + length
        if kind == 0:  # zero padding to the end of the block
            position += BLOCK - position % BLOCK if position % BLOCK else 0
            continue
        pending = piece if kind in (FULL, FIRST) else pending + piece
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def history(path: Path) -> list[dict[str, Any]]:
    """Each `run.log` call's values, with `_step`."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
            for record in records(path) if record.WhichOneof("record_type") == "history"]


def config(path: Path) -> dict[str, Any]:
    """The run's config, as the run record and later config updates left it."""
    values: dict[str, Any] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        update = (record.run.config if kind == "run" else
                  record.config if kind == "config" else None)
        if update is not None:
            for item in update.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def run_info(path: Path) -> dict[str, Any]:
    """The run record's name and group, and the exit code of its end (None if it never
    ended)."""
    info: dict[str, Any] = {"exit_code": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info.update(name=record.run.display_name, group=record.run.run_group)
        elif kind == "exit":
            info["exit_code"] = record.exit.exit_code
    return info
