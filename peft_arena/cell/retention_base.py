"""The base model's side of the retention figures, computed apart from every cell.

    python -m peft_arena.cell.retention_base JOBS.json OUT.json

The base side (the untouched model's features, perplexity and transfer accuracy on the probe
set) is the same for every strategy and seed of a model and task. The matrix runs this once
before it hands its cells to the executor, so that it fills the shared cache
(measure.retention.ensure_base_side) and no cell's time holds it. JOBS.json lists
`{"spec": <cell spec>, "data_dir": str | null, "trust_remote_code": bool}`; OUT.json gets
one entry per distinct base side: its model, task, cache entry, whether it was cached
already and how long it took. A cell whose entry is missing all the same (a worker with a
cache of its own, a failure here) computes it itself, under the same lock, and says so in its
record (`retention.base.computed_by`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from peft_arena.cell.retention_step import base_loader
from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.data.loading import resolve_data_dir
from peft_arena.data.probe_texts import draw_probe_set
from peft_arena.measure.retention import BaseInputs, ensure_base_side, no_probe_texts
from peft_arena.model.heads import load_config
from peft_arena.model.loading import load_tokenizer
from peft_arena.strategies import load_strategies
from peft_arena.train.memory_tools import base_dtype
from peft_arena.train.precision import resolve_precision

# The head is new and unused: the base side reads the body alone.
PLACEHOLDER_LABELS = ["0", "1"]


def base_inputs(spec: CellSpec, data_dir: str | Path | None, *,
                trust_remote_code: bool = False) -> tuple[BaseInputs, torch.dtype]:
    """What fixes the base side of `spec`'s cell, resolved as the cell resolves it."""
    precision = resolve_precision(spec.precision)
    is_peft = load_strategies().get(spec.strategy)(spec).peft_config_class is not None
    dtype = base_dtype(is_peft, precision.name)
    tokenizer = load_tokenizer(spec.model, trust_remote_code=trust_remote_code)
    probe = draw_probe_set(resolve_task(spec.task_source), resolve_data_dir(data_dir))
    config = load_config(spec.model, trust_remote_code=trust_remote_code)
    return BaseInputs(resolve_model_path(spec.model), config, tokenizer, spec.task, probe,
                      spec.max_length, str(dtype).removeprefix("torch.")), dtype


def fill(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compute the base side of each distinct entry the jobs need (see the module docstring)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    done: dict[str, dict[str, Any]] = {}
    for job in jobs:
        spec = CellSpec.from_dict(job["spec"])
        started = time.perf_counter()
        inputs, dtype = base_inputs(spec, job.get("data_dir"),
                                    trust_remote_code=bool(job.get("trust_remote_code")))
        if no_probe_texts(inputs.probe) is not None:
            continue  # the cell records why it has no retention figures
        entry = inputs.cache_file().stem
        if entry in done:
            continue
        side = ensure_base_side(inputs, base_loader(
            spec, PLACEHOLDER_LABELS, device=device, dtype=dtype, pad_id=inputs.pad_id,
            trust_remote_code=bool(job.get("trust_remote_code"))), computed_by="matrix")
        done[entry] = {"model": spec.model, "task": spec.task, "dtype": inputs.dtype_name,
                       "max_tokens": inputs.max_tokens, "probe_hash": inputs.probe.digest,
                       **side.describe(),
                       # With the probe set's drawing and the tokenizer's loading.
                       "wall_s": time.perf_counter() - started}
    return list(done.values())


def main(argv: list[str]) -> int:
    jobs_file, out_file = (Path(a) for a in argv)
    jobs = json.loads(jobs_file.read_text(encoding="utf-8"))
    out_file.write_text(json.dumps(fill(jobs), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
