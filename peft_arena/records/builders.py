"""The three ways a record is made: a finished cell (ok), a search trial (partial) and a
failure (failed). Sections are described in records.schema; the callers measure, these only
assemble, so this module loads nothing heavy."""

from __future__ import annotations

import datetime as dt
import traceback
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.records.schema import (
    SCHEMA_VERSION,
    Artifacts,
    Compute,
    DataHygiene,
    Environment,
    Error,
    Execution,
    HistoryEntry,
    Memory,
    MemoryTools,
    Metrics,
    Params,
    Predictions,
    Record,
    Resolved,
    Retention,
    Status,
    Time,
    WeightUpdate,
)

# Kept whole in a record: enough to find the cause, small enough to read the file.
MESSAGE_CHARS = 2000
TRACEBACK_CHARS = 4000


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _task_kind(spec: CellSpec) -> str | None:
    try:
        return resolve_task(spec.task_source).kind
    except UserError:  # the task file is gone or broken: the failed record says why
        return None


def _head(spec: CellSpec, status: Status) -> Record:
    return {"schema_version": SCHEMA_VERSION, "cell_id": spec.cell_id, "status": status,
            "spec": spec.to_dict(), "task_kind": _task_kind(spec)}


def ok_record(spec: CellSpec, *, resolved: Resolved, data_hygiene: DataHygiene,
              metrics: Metrics, params: Params, time: Time, memory: Memory, compute: Compute,
              history: list[HistoryEntry], best_step: int | None, stopped_early: bool,
              artifacts: Artifacts, predictions: Predictions, environment: Environment,
              started_at: str, strategy_state: dict[str, Any] | None = None,
              memory_tools: MemoryTools | None = None,
              execution: Execution | None = None,
              retention: Retention | None = None,
              weight_update: WeightUpdate | None = None) -> Record:
    return {**_head(spec, "ok"), "resolved": resolved, "data_hygiene": data_hygiene,
            "metrics": metrics, "params": params,
            "time": time, "memory": memory, "memory_tools": memory_tools, "compute": compute,
            "history": history,
            "best_step": best_step, "stopped_early": stopped_early, "artifacts": artifacts,
            "strategy_state": strategy_state, "predictions": predictions, "error": None,
            "environment": environment, "execution": execution or {},
            "started_at": started_at, "finished_at": utc_now(),
            **({"retention": retention} if retention is not None else {}),
            **({"weight_update": weight_update} if weight_update is not None else {})}


def partial_record(spec: CellSpec, *, metrics: Metrics, params: Params, time: Time,
                   history: list[HistoryEntry], best_step: int | None,
                   stopped_early: bool) -> Record:
    """What training alone produces: the test split was never touched."""
    return {**_head(spec, "partial"), "metrics": metrics, "params": params, "time": time,
            "history": history, "best_step": best_step, "stopped_early": stopped_early}


def error_section(exc: BaseException, phase: str, *, with_traceback: bool = True) -> Error:
    """`with_traceback`: the stack being handled is the failing cell's own (not a process
    that only watched it die)."""
    return {"type": type(exc).__name__, "message": str(exc)[:MESSAGE_CHARS], "phase": phase,
            "traceback": traceback.format_exc()[-TRACEBACK_CHARS:] if with_traceback else None}


def failed_record(spec: CellSpec, error: Error, *, memory: Memory, environment: Environment,
                  run_id: str | None = None) -> Record:
    """A cell with no score: metrics stay empty, never zeros that would average in."""
    return {**_head(spec, "failed"), "metrics": {}, "params": {}, "time": {},
            "memory": memory, "compute": {}, "history": [], "predictions": None,
            "error": error, "environment": environment, "started_at": None,
            "finished_at": utc_now(), "run_id": run_id}
