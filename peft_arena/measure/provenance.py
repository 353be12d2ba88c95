"""Where a number came from: package versions, commit, hardware, threads.

Together with the record's schema_version, spec (seed included) and resolved.data_fingerprint
(hashes of the token ids actually trained and tested on), this is what a reader needs to
reproduce a figure or to tell two figures apart.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from peft_arena.common.cpu_features import BF16_FLAGS, SPEED_FLAGS, cpu_flags, cpu_model

PACKAGES = ("peft-arena", "torch", "transformers", "peft", "accelerate", "bitsandbytes",
            "datasets", "tokenizers", "numpy", "scikit-learn")
# Environment variables that change how many threads the math libraries use.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The checkout's own results folder (committed records), left out of the dirty check.
RESULTS_FOLDER = "results"


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@cache
def git_state() -> dict[str, Any]:
    """The commit of the peft-arena checkout (None when installed from a wheel)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        # Records written into the checkout's results/ are output, not a change to the code
        # that produced them: they must not mark the next record dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", f":(exclude){RESULTS_FOLDER}"],
                               cwd=root, capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def gpu_driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library or no driver: the figure is simply unknown
        return None


def hardware() -> dict[str, Any]:
    import torch  # here, not at the top: a matrix process describes a dead cell without it

    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_flags": [flag for flag in BF16_FLAGS if flag in flags],
        "cpu_speed_flags": [flag for flag in SPEED_FLAGS if flag in flags],
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES
                             if name in os.environ},
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_bytes"] = int(properties.total_memory)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_driver"] = gpu_driver_version()
    return info


def environment(precision: str) -> dict[str, Any]:
    return {"versions": package_versions(), "hardware": hardware(), "precision": precision,
            **git_state()}
