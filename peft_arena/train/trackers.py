"""Experiment trackers (Weights & Biases, MLflow, TensorBoard) through Accelerate's tracking API.

Off by default. A cell with `tracker` set logs its settings once and every validation pass
(train loss, validation loss, accuracy, macro F1) at its step, then the test metrics; a cell
that fails ends its run as failed.

    wandb        one run per cell in the W&B project "peft-arena", named by the cell id and
                 grouped by task-strategy (WANDB_MODE=offline writes WANDB_DIR/wandb/)
    mlflow       one run per cell in the MLflow experiment "peft-arena", named by the cell id,
                 in MLflow's store (MLFLOW_TRACKING_URI; MLflow's own default otherwise)
    tensorboard  RESULTS/tensorboard/<cell id>/ (scalars in peft-arena/, settings as hparams)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec

PROJECT = "peft-arena"
_AVAILABLE: dict[str, Callable[[], bool]] = {
    "wandb": is_wandb_available,
    "mlflow": is_mlflow_available,
    "tensorboard": is_tensorboard_available,
}


def check_available(name: str | None) -> None:
    """Fail early, in one line, when the tracker's package is not installed."""
    if name is None:
        return
    if name not in _AVAILABLE:
        raise UserError(f"Unknown tracker {name!r}; use one of {', '.join(_AVAILABLE)}.")
    if not _AVAILABLE[name]():
        raise UserError(
            f"--tracker {name} needs the {name} package; install it with "
            f"pip install 'peft-arena[{name}]'."
        )


def accelerator_kwargs(spec: CellSpec, results_dir: Path | None) -> dict[str, Any]:
    """Keyword arguments for `Accelerator(...)` that switch the cell's tracker on."""
    if spec.tracker is None:
        return {}
    check_available(spec.tracker)
    kwargs: dict[str, Any] = {"log_with": spec.tracker}
    if spec.tracker == "tensorboard":  # the only one of the three that writes where we say
        kwargs["project_dir"] = str(Path(results_dir or ".") / "tensorboard" / spec.cell_id)
    return kwargs


def flat_config(spec: CellSpec) -> dict[str, str | int | float | bool]:
    """The spec as scalars: TensorBoard's hparams and MLflow's params take nothing else."""
    flat: dict[str, str | int | float | bool] = {"cell_id": spec.cell_id}
    data = spec.to_dict()
    peft = data.pop("peft")
    for key, value in [*data.items(), *((f"peft.{k}", v) for k, v in peft.items())]:
        flat[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return flat


def start(accelerator: Accelerator, spec: CellSpec) -> None:
    if spec.tracker is None:
        return
    accelerator.init_trackers(
        PROJECT,
        config=flat_config(spec),
        init_kwargs={"wandb": {"name": spec.cell_id, "group": f"{spec.task}-{spec.strategy}"},
                     "mlflow": {"run_name": spec.cell_id}},
    )


def end_failed(name: str | None) -> None:
    """End the tracker run of a cell that raised, marked as failed: the trackers keep one
    active run per process, so no accelerator is needed. Harmless when none is active."""
    if name == "mlflow" and "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
    elif name == "wandb" and "wandb" in sys.modules:
        run = sys.modules["wandb"].run
        if run is not None:
            run.finish(exit_code=1)
