"""One worker's measurement of one (model, method) pair: a typed row, as the app's run record is.

The worker prints it as one JSON line; the driver reads it back strictly (``grft_app.strict_json``: an
unknown or missing key, or a value of the wrong type, is an error naming the key) and keeps it in
``latest_runs.jsonl``. Torch-free, so the driver that reads it stays small. Sizes in MiB (``_mb``) and
bytes, times in seconds; ``None`` where a value does not apply (``k`` of a method that reads none) or
cannot be measured (``live_peak_mb`` without glibc).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from grft_app.strict_json import from_json


@dataclass(frozen=True)
class WorkerRow:
    model: str
    method: str
    step_time_s: float  # median of the measured steps
    peak_mem_mb: float  # training's peak (reset after the setup)
    trainable_params: int
    optimizer_state_mb: float
    adapter_mb: float
    probe_s: float
    probe_batches: int  # 0: the method has no probe
    probe_batch_s: float | None  # per batch, the memory plan's time left out
    build_peak_mb: float
    prepare_peak_mb: float
    whole_run_peak_mb: float
    device: str
    step_time_p25: float
    step_time_p75: float
    step_cpu_s: float
    live_peak_mb: float | None
    setup_peak_mb: float
    peak_after_setup_reset: bool
    mem_source: str
    total_params: int
    optimizer_state_bytes: int
    adapter_bytes: int
    k: int | None
    batch: int
    workload: str
    precision: str
    threads: int
    steps: int
    warmup: int
    loss_first: float
    loss_last: float
    load_avg_1m: float
    torch: str
    step_times: list[float]
    # GRFT's probe plan (None for the other methods, and in rows written before the probe had passes):
    probe_plan_s: float | None = None  # the memory plan (two measuring forwards, once per run)
    probe_passes: int | None = None  # passes over the probe data (one group of layers each)
    probe_store_mb: float | None = None  # the gradient sums of every eligible matrix (held a group at a time)
    probe_budget_mb: float | None = None  # the probe's budget (probe.memory); None with forced passes
    probe_deferred_over_mb: float | None = None  # weights with a larger sum are summed after their pass (None: none)

    def to_line(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, data: dict) -> WorkerRow:
        """A row from a worker's parsed JSON line; ``grft_app.strict_json.Mismatch`` names a bad key."""
        return from_json(cls, data)

    @classmethod
    def from_line(cls, line: str) -> WorkerRow:
        return cls.read(json.loads(line))
