"""Which hardware a record's times, memory and MFU were measured on, by what changes speed.

Two records are comparable on speed only when these match: on CPU the model, the features
that decide bf16 speed (AMX, AVX512-BF16), the cores and the threads the cell had; on GPU the
model and how many the cell used; and on both the precision the cell chose and the processes
it ran as. A model name alone is not enough: "Intel(R) Xeon(R) Processor" names machines with
and without AMX, whose bf16 speed differs several-fold.

Works on any record, old ones included (fields a record lacks are left out of its label), and
imports nothing heavy: the report side uses it.
"""

from __future__ import annotations

from typing import Any

from peft_arena.common.cpu_features import SHOWN_FLAGS
from peft_arena.common.nested import dig


def _flags(hardware: dict[str, Any]) -> list[str]:
    flags = hardware.get("cpu_speed_flags") or hardware.get("cpu_bf16_flags") or []
    return [SHOWN_FLAGS[f] for f in SHOWN_FLAGS if isinstance(flags, list) and f in flags]


def _cpu(hardware: dict[str, Any]) -> str:
    name = str(hardware.get("cpu") or "unknown CPU")
    flags = _flags(hardware)
    if hardware.get("cpu_bf16_flags") is not None or hardware.get("cpu_speed_flags") is not None:
        name += f" [{'+'.join(flags) if flags else 'no AVX512-BF16/AMX'}]"
    return name


def machine_label(hardware: dict[str, Any]) -> str:
    """The machine alone: CPU (or GPU) model and features, and core count."""
    if hardware.get("gpu"):
        return f"{hardware['gpu']} x{hardware.get('gpu_count') or '?'}"
    cores = hardware.get("cpu_count")
    return _cpu(hardware) + (f", {cores} cores" if cores else "")


def machine_of(record: dict[str, Any]) -> str | None:
    hardware = dig(record, "environment", "hardware")
    return machine_label(hardware) if isinstance(hardware, dict) else None


def machine_here() -> str:
    from peft_arena.measure.provenance import hardware  # imports torch: only where cells run

    return machine_label(hardware())


def hardware_identity(record: dict[str, Any]) -> str | None:
    """What a record's speed depends on, as one label; None when it names no hardware.

    The cell's own `execution.hardware` wins (written since cells could run anywhere);
    older records get the same label from their environment section.
    """
    stored = dig(record, "execution", "hardware")
    if isinstance(stored, str) and stored:
        return stored
    hardware = dig(record, "environment", "hardware")
    if not isinstance(hardware, dict):
        return None
    precision = dig(record, "environment", "precision")
    processes = dig(record, "execution", "processes") or 1
    return identity_label(hardware, precision, processes)


def identity_label(hardware: dict[str, Any], precision: str | None, processes: int = 1) -> str:
    if hardware.get("gpu"):
        # A cell sees the GPUs it was given: its processes, one device each.
        parts = [f"{hardware['gpu']} x{processes}"]
    else:
        parts = [_cpu(hardware)]
        if hardware.get("cpu_count"):
            parts.append(f"{hardware['cpu_count']} cores")
        threads = hardware.get("torch_threads")
        if threads:
            parts.append(f"{threads} threads" + (f" x{processes} processes"
                                                  if processes > 1 else ""))
    if precision:
        parts.append(str(precision))
    return ", ".join(parts)
