"""A stand-in for pynvml, so that the GPU memory figures are tested on any machine."""

from __future__ import annotations

from types import SimpleNamespace

OWN = 4242  # the process id the poller takes for its own
GiB = 2**30


class FakeNvml:
    """Stands in for pynvml: reports whatever the test sets in `used` and `processes`."""

    class NVMLError(Exception):
        pass

    def __init__(self, used: int, processes: dict[int, int | None] | None) -> None:
        self.used, self.processes, self.reads = used, processes, 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.reads += 1
        return SimpleNamespace(used=self.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if self.processes is None:
            raise self.NVMLError("not supported on this device")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used)
                for pid, used in self.processes.items()]


class GrowingNvml(FakeNvml):
    """Every memory reading is one GiB more than the last, all of it ours."""

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.used += GiB
        self.processes = {OWN: self.used}
        return super().nvmlDeviceGetMemoryInfo(handle)
