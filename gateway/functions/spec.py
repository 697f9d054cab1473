"""What the gateway needs to know about one function (built from its [functions.NAME] table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MiB = 1024 * 1024
# AWS's synchronous response limit, and the number its error messages print.
MAX_RESPONSE_BYTES = 6291556

RuntimeName = Literal["python", "provided"]


@dataclass(frozen=True)
class FunctionSpec:
    """One function. Durations in seconds, memory in bytes; AWS's defaults (3 s, 128 MiB)."""

    name: str
    code: Path  # folder with the handler (python) or an executable ``bootstrap`` (provided)
    handler: str = "app.handler"  # module.function for "python"; passed as _HANDLER to "provided"
    runtime: RuntimeName = "python"
    timeout: float = 3.0
    memory: int = 128 * MiB
    concurrency: int = 8  # most instances at once
    provisioned: int = 0  # instances kept warm
    idle_timeout: float = 600.0  # an idle instance above `provisioned` is stopped after this
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = True  # False: the instances get a network namespace with only loopback
    platform_logs: bool = True  # False (system_log_level WARN): no START/END/REPORT in the log
    cpus: tuple[int, ...] | None = None  # CPUs the sandbox runs on; None: the worker's

    @property
    def memory_mb(self) -> int:
        return self.memory // MiB

    def arn(self, region: str, account_id: str) -> str:
        return f"arn:aws:lambda:{region}:{account_id}:function:{self.name}"
