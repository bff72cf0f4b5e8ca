"""`train.precision: auto`: measure this machine's fp32 and bf16 matrix-product rates at the model's own shapes and
train in the faster one whose accuracy holds.

CPUs differ: with AMX (`amx_bf16` in /proc/cpuinfo) bf16 products run 3-6x faster than fp32; without it (AVX-512 BF16
only) it depends on the shapes: half the fp32 rate for a 2048^3 product on one such machine, 3x at the documents'
MLP shapes on another (benchmarks/README.md). So nothing is assumed: a short probe times the training step's products,
forward (B x in) @ (in x out) and the two backward ones, in both precisions, and the result is cached per machine
(CPU model and flags, thread count, torch version, shapes) in ``<data root>/precision.json``.

A model with convolutions is probed on its own training step instead (forward and backward of one batch's loss,
timed in both precisions alternately; FLOPs counted by torch.utils.flop_counter), since its time goes to the
convolutions, whose bf16 kernels differ from the matrix products' (cached by the parameter shapes and batch).

bf16 is chosen only when it is faster by ``MIN_SPEEDUP`` and one forward pass of the model under bf16 autocast gives
the fp32 loss to within ``MAX_RELATIVE_ERROR`` (the losses themselves are always computed in fp32).
"""
from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vaelab.data import PixelSampler, load_dataset
from vaelab.data.registry import data_root
from vaelab.fileio import atomic_write_json
from vaelab.models import build_model
from vaelab.objectives import Objective

MIN_SPEEDUP = 1.15  # bf16 must be this much faster at the model's shapes to be worth its rounding
MAX_RELATIVE_ERROR = 0.02  # |loss_bf16 - loss_fp32| / |loss_fp32| on one batch, forward only
PROBE_SECONDS = 0.15  # per precision and shape, after a warm-up
GIVE_UP_SLOWER = 2.0  # a first timed bf16 call this many times slower than fp32's ends the probe (no bf16 hardware)


@dataclass
class PrecisionChoice:
    """What `auto` chose and why: the rates (GFLOP/s) measured at the model's shapes."""

    precision: str  # "fp32" or "bf16"
    fp32_gflops: float | None  # None where nothing was probed
    bf16_gflops: float | None
    reason: str
    cached: bool = False
    relative_error: float | None = None

    def as_metrics(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) and k.endswith("gflops") else v) for k, v in asdict(self).items()}


def cpu_signature() -> str:
    """CPU model, the flags that decide bf16 speed, threads and torch version: what a cached probe is valid for."""
    model, flags = platform.processor(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), model)
        first = next((line for line in text.splitlines() if line.startswith("flags")), "")
        flags = " ".join(sorted(f for f in first.split() if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2"))))
    except OSError:
        pass
    return f"{model} | {flags} | threads {torch.get_num_threads()} | torch {torch.__version__}"


def linear_shapes(model: torch.nn.Module, batch: int) -> list[tuple[int, int, int]]:
    """(batch, in, out) of every Linear layer, each once."""
    return sorted({(batch, m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)})


def gemm_rates(shapes: list[tuple[int, int, int]], seconds: float = PROBE_SECONDS) -> tuple[float, float]:
    """GFLOP/s of one training step's products at ``shapes`` (forward x @ W^T, backward dY @ W and dY^T @ x) in fp32
    and in bf16 on the CPU: medians of timings that alternate between the two, so that both see the same load."""
    def operands(dtype):
        return [(torch.randn(b, i, dtype=dtype), torch.randn(o, i, dtype=dtype), torch.randn(b, o, dtype=dtype))
                for b, i, o in shapes]

    def step(tensors) -> float:
        t0 = time.perf_counter()
        for x, w, dy in tensors:
            x @ w.T
            dy @ w
            dy.T @ x
        return time.perf_counter() - t0

    flop = sum(3 * 2 * b * i * o for b, i, o in shapes)
    fp32, bf16 = operands(torch.float32), operands(torch.bfloat16)
    t32, t16 = alternating_medians(lambda: step(fp32), lambda: step(bf16), seconds, rounds=5)
    return flop / t32 / 1e9, flop / t16 / 1e9


def alternating_medians(fp32: Callable[[], float], bf16: Callable[[], float], seconds: float,
                        rounds: int) -> tuple[float, float]:
    """Median seconds of ``fp32()`` and ``bf16()`` (each returns the seconds it took), called alternately so that both
    see the same load: one warm-up call each (allocations, kernel selection), then rounds for 2 x ``seconds`` and at
    least ``rounds`` of them, unless the first timed round finds bf16 more than GIVE_UP_SLOWER times slower.

    That early stop matters on CPUs without bf16 arithmetic (no AVX-512 BF16, no AMX), where bf16 runs 17-450x
    slower than fp32 (3.7 against 80-110 GFLOP/s at the documents' MLP shapes, 0.3 against 130 at 2048^3 on one AVX2
    machine): a full probe of document 000's 8x8x1024 conv step would spend minutes in bf16 to learn nothing more."""
    fp32(), bf16()
    times: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while time.perf_counter() - start < 2 * seconds or len(times[0]) < rounds:
        times[0].append(fp32())
        times[1].append(bf16())
        if len(times[0]) == 1 and times[1][0] > GIVE_UP_SLOWER * times[0][0]:
            break
    return statistics.median(times[0]), statistics.median(times[1])


def _cache_file(name: str = "precision") -> Path:
    return data_root() / f"{name}.json"


def read_machine_cache(name: str = "precision") -> dict:
    """What the probes of this machine measured before: data_root()/NAME.json (precision rates, compile choices)."""
    try:
        cache = json.loads(_cache_file(name).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def write_machine_cache(name: str, cache: dict) -> None:
    """Write the cache NAME atomically; a read-only home only means probing again next time."""
    try:
        atomic_write_json(_cache_file(name), cache)
    except OSError:
        pass


def step_rates(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor],
               seconds: float = PROBE_SECONDS) -> tuple[float, float]:
    """GFLOP/s of the model's whole training step (forward and backward of ``loss_of()``) in fp32 and under bf16
    autocast: medians of timings that alternate between the two. The model's gradients are cleared after."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss_of().backward()
    flop = max(counter.get_total_flops(), 1)

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of()
        loss.backward()
        return time.perf_counter() - t0

    t32, t16 = alternating_medians(lambda: step(False), lambda: step(True), seconds, rounds=3)
    model.zero_grad(set_to_none=True)
    return flop / t32 / 1e9, flop / t16 / 1e9


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def probe_rates(shapes: list, use_cache: bool = True,
                measure: Callable[[], tuple[float, float]] | None = None) -> tuple[float, float, bool]:
    """(fp32 GFLOP/s, bf16 GFLOP/s, whether they came from the cache) at ``shapes`` on this machine: the matrix
    products at those (batch, in, out) shapes, or ``measure()`` (a whole step) keyed by ``shapes``."""
    key = hashlib.sha256(f"{cpu_signature()} | {shapes}".encode()).hexdigest()[:16]
    cache = read_machine_cache() if use_cache else {}
    if key in cache:
        return cache[key]["fp32"], cache[key]["bf16"], True
    fp32, bf16 = measure() if measure is not None else gemm_rates(shapes)
    if use_cache:
        cache[key] = {"fp32": fp32, "bf16": bf16, "cpu": cpu_signature(), "shapes": shapes}
        write_machine_cache("precision", cache)
    return fp32, bf16, False


def choose_precision(model: torch.nn.Module, batch: int, device: torch.device,
                     loss_of: Callable[[], torch.Tensor] | None = None, use_cache: bool = True) -> PrecisionChoice:
    """The precision `auto` trains ``model`` in. ``loss_of()`` computes one batch's loss deterministically (its own
    seeded generator); it is called once in fp32 and once under bf16 autocast to check that bf16 keeps the loss."""
    if device.type != "cpu":
        return PrecisionChoice("fp32", None, None, f"{device.type}: the probe covers CPUs only; fp32")
    if has_convolutions(model):  # time the step itself: convolutions have their own bf16 kernels
        if loss_of is None:
            return PrecisionChoice("fp32", None, None, "a model with convolutions and no step to probe; fp32")
        shapes: list = ["step", batch, [[n, list(p.shape)] for n, p in model.named_parameters()]]
        fp32, bf16, cached = probe_rates(shapes, use_cache, lambda: step_rates(model, loss_of))
        what = "training steps"
    else:
        shapes = linear_shapes(model, batch)
        if not shapes:
            return PrecisionChoice("fp32", None, None, "no linear layers to probe; fp32")
        fp32, bf16, cached = probe_rates(shapes, use_cache)
        what = "products"
    if bf16 < MIN_SPEEDUP * fp32:
        return PrecisionChoice("fp32", fp32, bf16, f"bf16 {what} run at {bf16 / fp32:.2f}x the fp32 rate here", cached)
    error = None
    if loss_of is not None:
        with torch.no_grad():
            ref = float(loss_of())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = float(loss_of())
        error = abs(low - ref) / max(abs(ref), 1e-12)
        if not error <= MAX_RELATIVE_ERROR:
            return PrecisionChoice("fp32", fp32, bf16, f"bf16 is {bf16 / fp32:.2f}x faster but changes the loss by "
                                   f"{100 * error:.1f}% (limit {100 * MAX_RELATIVE_ERROR:g}%)", cached, error)
    return PrecisionChoice("bf16", fp32, bf16, f"bf16 {what} run at {bf16 / fp32:.2f}x the fp32 rate here", cached, error)


def choose_for_batch(model: torch.nn.Module, objective, x: torch.Tensor) -> PrecisionChoice:
    """choose_precision for ``model`` trained with ``objective`` on batches like ``x`` (B, C, H, W), the loss check
    on x itself with the same noise each call."""
    device = x.device
    return choose_precision(model, x.shape[0], device,
                            lambda: objective(model, x, torch.Generator(device=device).manual_seed(0)).loss)


def resolve_auto(configs: list) -> tuple[list, list[dict | None]]:
    """``configs`` (RunConfig) with ``train.precision: auto`` replaced by the choice for their model, probed once per
    distinct model, batch size and dataset in this process, and for each config what the probe measured (None where
    nothing was probed; the trainer records it in the run's metrics). A study calls this before it hands its runs to
    workers, so that every run of one model trains in the same precision whichever process or executor runs it."""

    chosen: dict[str, PrecisionChoice] = {}
    out, probes = [], []
    for c in configs:
        on_gpu = c.train.device == "cuda" or (c.train.device == "auto" and torch.cuda.is_available())
        if c.train.precision != "auto" or on_gpu:  # (the trainer decides auto on a GPU: fp32 there)
            out.append(c)
            probes.append(None)
            continue
        key = json.dumps([c.data.model_dump(mode="json"), c.model.model_dump(mode="json"), c.train.batch_size,
                          c.objective.model_dump(mode="json")], sort_keys=True)
        if key not in chosen:
            with torch.random.fork_rng():  # (the caller's global random state is left as it was)
                torch.manual_seed(c.train.seed)
                model = build_model(c)
            data = load_dataset(c.data.name, train_size=c.data.train_size, test_size=c.data.test_size)
            x = PixelSampler(c.data.pixels, data.x_train[:1], data.x_test, c.data.binarize_seed).test[:c.train.batch_size]
            chosen[key] = choose_for_batch(model, Objective(c.objective), x)
        out.append(c.model_copy(update={"train": c.train.model_copy(update={"precision": chosen[key].precision})}))
        probes.append(chosen[key].as_metrics())
    return out, probes
