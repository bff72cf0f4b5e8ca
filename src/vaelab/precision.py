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

**A noisy machine cannot fool it**: the two precisions are timed in alternating rounds and a decision is taken
only when an interval on the median of the rounds' ratios excludes MIN_SPEEDUP (:mod:`vaelab.timing`); an undecided
probe trains in fp32 and caches nothing, and a cached decision is re-checked by one short round when a run starts.
:func:`machine_report` (``vaelab doctor``) shows what was decided here, when and under what load.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vaelab.cpu import bf16_arithmetic, cpu_info, cpu_signature  # noqa: F401
from vaelab.data import PixelSampler, load_dataset
from vaelab.data.registry import data_root
from vaelab.fileio import atomic_write_json
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.timing import CONFIDENCE, Rounds, look_confidence, median_interval, when_and_load  # noqa: F401

MIN_SPEEDUP = 1.15  # bf16 must be this much faster at the model's shapes to be worth its rounding
MAX_RELATIVE_ERROR = 0.02  # |loss_bf16 - loss_fp32| / |loss_fp32| on one batch, forward only
GIVE_UP_SLOWER = 2.0  # a first timed bf16 call this many times slower than fp32's ends the probe (no bf16 hardware)

# How the alternating rounds decide (alternating_rounds, median_interval).
MIN_ROUNDS = 8  # the first look: 8 rounds are the fewest whose [min, max] covers the median with 99% (look 0's)
MAX_ROUNDS = 1024  # the last look; a ratio still undecided there sits within noise of the threshold
PROBE_BUDGET_S = 3.0  # rounds go on while undecided for this long (the first MIN_ROUNDS always run, up to MAX_PROBE_S)
MAX_PROBE_S = 60.0
MIN_ROUND_S = 1e-3  # each side of a round repeats its call until it lasts about this long (timer, scheduler)
WARMUP_AGREE = 0.10  # warm once two successive calls of each side agree within 10%
WARMUP_CALLS = 10  # at most this many calls of each before the timed rounds
RECHECK_ROUNDS = 3  # a cached decision's check: one warm-up, then this many alternating rounds
RECHECK_CLEAR = 1.25  # the check contradicts the decision when its ratio lies this factor beyond the threshold
NOISE_CANNOT_EXPLAIN = 10.0  # on a CPU with bf16 arithmetic, only a first round this much slower ends the probe


@dataclass
class PrecisionChoice:
    """What `auto` chose and why: the rates (GFLOP/s) measured at the model's shapes, and how they were measured
    (``probe``: the interval, rounds, when and under what load, whether a cached decision was re-checked)."""

    precision: str  # "fp32" or "bf16"
    fp32_gflops: float | None  # None where nothing was probed
    bf16_gflops: float | None
    reason: str
    cached: bool = False
    relative_error: float | None = None
    probe: dict = field(default_factory=dict)

    def as_metrics(self) -> dict:
        out = {k: (round(v, 1) if isinstance(v, float) and k.endswith("gflops") else v)
               for k, v in asdict(self).items() if k != "probe"}
        return {**out, **{k: v for k, v in self.probe.items() if k not in out and k != "decision"}}


def linear_shapes(model: torch.nn.Module, batch: int) -> list[tuple[int, int, int]]:
    """(batch, in, out) of every Linear layer, each once."""
    return sorted({(batch, m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)})


# --- alternating rounds and the interval that decides -------------------------------------------------------
def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= WARMUP_AGREE * min(a, b)


def warm_up(calls: list[Callable[[], float]], most: int = WARMUP_CALLS, seconds: float = math.inf,
            stop: Callable[[tuple[float, ...]], bool] = lambda times: False) -> list[tuple[float, ...]]:
    """Call each of ``calls`` (each returns the seconds it took) in turn, again and again, until two successive
    timings of every one agree within WARMUP_AGREE, ``most`` calls have been made, the calls after the first have
    taken ``seconds``, or ``stop(timings)`` says so; returns every turn's timings. The first turn carries one-time
    costs (allocation, kernel selection, oneDNN's JIT on AMX, compiling); the last is the first warm one."""
    turns = [tuple(c() for c in calls)]
    start = time.perf_counter()
    while len(turns) < most and (len(turns) < 2 or time.perf_counter() - start < seconds):
        turns.append(tuple(c() for c in calls))
        if stop(turns[-1]) or all(_agree(a, b) for a, b in zip(turns[-1], turns[-2])):
            break
    return turns


def alternating_rounds(base: Callable[[], float], cand: Callable[[], float], threshold: float | None = None, *,
                       budget_s: float = PROBE_BUDGET_S, give_up: float = math.inf, recheck: bool = False,
                       min_rounds: int = MIN_ROUNDS, min_seconds: float = 0.0) -> Rounds:
    """Time ``base()`` against ``cand()`` (each returns the seconds it took) in alternating rounds until the interval
    on the median of the rounds' ratios base / cand excludes ``threshold``.

    Warm-up: both are called in turn until two successive timings of each agree (:func:`warm_up`, for at most
    ``budget_s``); that agreeing turn is the first timed round. A first round that finds ``cand`` more than ``give_up`` times slower ends it
    (``early_stop``). Then each round calls both, in the order base, cand and cand, base in turn (a drift in the
    machine's speed cancels within each pair of rounds), each repeated to last about MIN_ROUND_S. Looks at
    MIN_ROUNDS * 2^j rounds, each with its share of 1 - CONFIDENCE (:func:`look_confidence`), and a last one when
    ``budget_s`` (after the first MIN_ROUNDS) or MAX_PROBE_S runs out or MAX_ROUNDS are reached; the verdict stays
    None when none excluded the threshold.

    ``recheck``: RECHECK_ROUNDS rounds, no verdict (a cached decision's check). ``threshold`` None: at least
    ``min_rounds`` rounds over at least ``min_seconds``, no verdict (plain medians, :func:`alternating_medians`)."""
    start = time.perf_counter()
    out = Rounds(threshold=threshold)
    turns = warm_up([base, cand], seconds=budget_s, stop=lambda t: t[1] > give_up * t[0])
    out.first, out.warmup_calls = turns[0], len(turns) - 1
    out.base.append(turns[-1][0])
    out.cand.append(turns[-1][1])
    if out.cand[0] > give_up * out.base[0]:
        out.early_stop, out.seconds = True, time.perf_counter() - start
        return out
    sides = [(base, max(1, int(MIN_ROUND_S / max(out.base[0], 1e-9))), out.base),
             (cand, max(1, int(MIN_ROUND_S / max(out.cand[0], 1e-9))), out.cand)]
    timed, look, looked_at = time.perf_counter(), 0, 0
    while True:
        n, elapsed = len(out.base), time.perf_counter() - timed
        if recheck or threshold is None:
            if n >= (RECHECK_ROUNDS if recheck else min_rounds) and (recheck or elapsed >= min_seconds):
                break
        else:
            if n == MIN_ROUNDS << look:
                out.look(look_confidence(look))
                look, looked_at = look + 1, n
                if out.verdict is not None:
                    break
            if (n >= MIN_ROUNDS and elapsed >= budget_s) or elapsed >= MAX_PROBE_S or n >= MAX_ROUNDS:
                if looked_at != n:
                    out.look(look_confidence(look))
                break
        for call, repeats, times in (sides if n % 2 == 0 else sides[::-1]):
            times.append(sum(call() for _ in range(repeats)) / repeats)
    out.seconds = time.perf_counter() - start
    return out


def contradicts(chose_candidate: bool, ratio: float, threshold: float) -> bool:
    """Whether a check's ``ratio`` lies clearly (RECHECK_CLEAR) on the other side of ``threshold`` from a cached
    decision that chose the candidate (bf16, compiled) or the baseline."""
    return ratio < threshold / RECHECK_CLEAR if chose_candidate else ratio > threshold * RECHECK_CLEAR


def alternating_medians(fp32: Callable[[], float], bf16: Callable[[], float], seconds: float,
                        rounds: int) -> tuple[float, float]:
    """Median seconds of ``fp32()`` and ``bf16()`` (each returns the seconds it took), called alternately so that both
    see the same load: warm-up calls until two successive timings agree (the agreeing one is the first round), then
    rounds for 2 x ``seconds`` and at least ``rounds`` of them, unless the first timed round finds bf16 more than
    GIVE_UP_SLOWER times slower.

    That early stop matters on CPUs without bf16 arithmetic (no AVX-512 BF16, no AMX), where bf16 runs 17-450x
    slower than fp32 (3.7 against 80-110 GFLOP/s at the documents' MLP shapes, 0.3 against 130 at 2048^3 on one AVX2
    machine): a full probe of document 000's 8x8x1024 conv step would spend minutes in bf16 to learn nothing more."""
    out = alternating_rounds(fp32, bf16, None, give_up=GIVE_UP_SLOWER, min_rounds=rounds, min_seconds=2 * seconds)
    return statistics.median(out.base), statistics.median(out.cand)


# --- the rates, measured and cached -------------------------------------------------------------------------
class Rates(tuple):
    """A tuple of numbers as the probes return them ((fp32, bf16) GFLOP/s, or with ``cached``), carrying how they
    were measured: ``rounds`` (:class:`Rounds`) and ``record`` (the decision as the cache and the metrics keep it).
    A plain tuple in their place (a caller's own measure) counts as a decision at its point ratio."""

    rounds: Rounds | None
    record: dict

    def __new__(cls, values, rounds: Rounds | None = None, record: dict | None = None):
        self = super().__new__(cls, values)
        self.rounds, self.record = rounds, record or {}
        return self


def timed_rates(fp32: Callable[[], float], bf16: Callable[[], float], flop: float, seconds: float = PROBE_BUDGET_S,
                recheck: bool = False) -> Rates:
    """(fp32 GFLOP/s, bf16 GFLOP/s) of work of ``flop`` FLOPs timed by ``fp32()`` and ``bf16()`` (each does it once and
    returns its seconds) in alternating rounds against MIN_SPEEDUP (``seconds``: their budget while undecided); the
    rates are ``flop`` over each side's median time, the rounds ride along. A first round of bf16 GIVE_UP_SLOWER
    times slower ends it on a CPU without bf16 arithmetic; elsewhere only NOISE_CANNOT_EXPLAIN times slower does."""
    give_up = GIVE_UP_SLOWER if bf16_arithmetic() is False else max(GIVE_UP_SLOWER, NOISE_CANNOT_EXPLAIN)
    rounds = alternating_rounds(fp32, bf16, MIN_SPEEDUP, budget_s=seconds, give_up=give_up, recheck=recheck)
    return Rates((flop / statistics.median(rounds.base) / 1e9, flop / statistics.median(rounds.cand) / 1e9), rounds)


def gemm_rates(shapes: list[tuple[int, int, int]], seconds: float = PROBE_BUDGET_S, recheck: bool = False) -> Rates:
    """GFLOP/s of one training step's products at ``shapes`` (forward x @ W^T, backward dY @ W and dY^T @ x) in fp32
    and in bf16 on the CPU, from alternating rounds (:func:`timed_rates`)."""
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
    return timed_rates(lambda: step(fp32), lambda: step(bf16), flop, seconds, recheck)


def step_rates(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], seconds: float = PROBE_BUDGET_S,
               recheck: bool = False) -> Rates:
    """GFLOP/s of the model's whole training step (forward and backward of ``loss_of()``) in fp32 and under bf16
    autocast, from alternating rounds (:func:`timed_rates`). The model's gradients are cleared after."""
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

    rates = timed_rates(lambda: step(False), lambda: step(True), flop, seconds, recheck)
    model.zero_grad(set_to_none=True)
    return rates


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


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


def _decision(fp32: float, bf16: float, rounds: Rounds | None) -> dict[str, Any]:
    """What measured rates decide: ``decision`` (bf16 or fp32 by speed) and whether it may be cached (``decided``)."""
    if rounds is None:  # rates alone: their point ratio decides
        return {"decision": "bf16" if bf16 >= MIN_SPEEDUP * fp32 else "fp32", "decided": True, "ratio": bf16 / fp32,
                "interval": None, "rounds": None}
    if rounds.early_stop:  # cached only where the flags say there is no bf16 arithmetic: one round proves no more
        return {**rounds.record(), "decision": "fp32", "decided": bf16_arithmetic() is False}
    if rounds.verdict == "faster" and bf16_arithmetic() is False:
        # Emulated bf16 is never faster than fp32 at the same products; a "faster" verdict here came from the load
        # (e.g. fp32's threads descheduled on oversubscribed cores), so it decides nothing and is not cached.
        return {**rounds.record(), "decision": "fp32", "decided": False, "emulated": True}
    return {**rounds.record(), "decision": "bf16" if rounds.verdict == "faster" else "fp32",
            "decided": rounds.verdict is not None}


def is_decision(entry: Any) -> bool:
    """Whether a cache entry (precision or compile) was written by a probe that records when, under what load and
    with what interval it decided; older entries are probed afresh."""
    return isinstance(entry, dict) and "when" in entry and "interval" in entry


def _trusted(entry: Any) -> bool:
    """A cache entry to use (after its re-check): a decision with rates, and never a bf16 that timed rounds decided
    on a CPU without bf16 arithmetic (written under a load that skewed the timing, before that rule existed)."""
    return is_decision(entry) and entry.get("decision") in ("bf16", "fp32") \
        and all(isinstance(entry.get(k), (int, float)) for k in ("fp32", "bf16")) \
        and not (entry["decision"] == "bf16" and entry.get("rounds") and bf16_arithmetic() is False)


def cache_key(shapes: list) -> str:
    """Where precision.json keeps the decision for ``shapes`` on this machine (CPU, threads, torch)."""
    return hashlib.sha256(f"{cpu_signature()} | {shapes}".encode()).hexdigest()[:16]


def probe_rates(shapes: list, use_cache: bool = True, measure: Callable[[], tuple[float, float]] | None = None,
                recheck: Callable[[], tuple[float, float]] | None = None) -> Rates:
    """(fp32 GFLOP/s, bf16 GFLOP/s, whether they came from the cache) at ``shapes`` on this machine: the matrix
    products at those (batch, in, out) shapes, or ``measure()`` (a whole step) keyed by ``shapes``; ``.record`` says
    what they decide and how they were measured.

    Only a decided measurement is cached. A cached one with an interval is re-checked by ``recheck()`` (the products'
    own by default: one short alternating round) and measured afresh when the check contradicts it; a fresh
    measurement that is undecided then leaves the old entry in place (this run falls back to fp32)."""
    if measure is None:
        measure, recheck = (lambda: gemm_rates(shapes)), (lambda: gemm_rates(shapes, recheck=True))
    key = cache_key(shapes)
    cache = read_machine_cache() if use_cache else {}
    entry, checked = cache.get(key), {}
    if _trusted(entry):
        kept = {k: v for k, v in entry.items() if k not in ("fp32", "bf16", "cpu", "shapes")}
        if recheck is None or entry.get("interval") is None:  # nothing to check it with, or decided by the flags
            return Rates((entry["fp32"], entry["bf16"], True), record={**kept, "rechecked": False})
        check = recheck()
        ratio = check.rounds.ratio if getattr(check, "rounds", None) else check[1] / check[0]
        checked = {"rechecked": True, "recheck_ratio": round(ratio, 4)}
        if not contradicts(entry["decision"] == "bf16", ratio, MIN_SPEEDUP):
            return Rates((entry["fp32"], entry["bf16"], True), record={**kept, **checked})
        checked["reprobed"] = True
    measured = measure()
    fp32, bf16 = measured
    record = {**_decision(fp32, bf16, getattr(measured, "rounds", None)), **when_and_load()}
    if use_cache and record["decided"]:
        cache[key] = {"fp32": fp32, "bf16": bf16, "cpu": cpu_signature(), "shapes": shapes,
                      **{k: v for k, v in record.items() if k != "decided"}}
        write_machine_cache("precision", cache)
    return Rates((fp32, bf16, False), getattr(measured, "rounds", None), {**record, **checked})


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
        probed = probe_rates(shapes, use_cache, lambda: step_rates(model, loss_of),
                             lambda: step_rates(model, loss_of, recheck=True))
        what = "training steps"
    else:
        shapes = linear_shapes(model, batch)
        if not shapes:
            return PrecisionChoice("fp32", None, None, "no linear layers to probe; fp32")
        probed = probe_rates(shapes, use_cache)
        what = "products"
    fp32, bf16, cached = probed
    record = dict(getattr(probed, "record", None) or {})
    ratio = record.get("ratio", bf16 / fp32)
    said = f"bf16 {what} run at {ratio:.2f}x the fp32 rate here" + how_decided(record)
    if record.get("emulated"):
        return PrecisionChoice("fp32", fp32, bf16, f"{said}, but this CPU has no bf16 arithmetic (the load skewed the "
                               "timing: emulated bf16 is not faster), so fp32 (not cached)", cached, probe=record)
    if record.get("decided") is False:
        return PrecisionChoice("fp32", fp32, bf16, f"{said}: undecided against {MIN_SPEEDUP}x, so fp32 (not cached)",
                               cached, probe=record)
    if record.get("decision", "bf16" if bf16 >= MIN_SPEEDUP * fp32 else "fp32") == "fp32":
        return PrecisionChoice("fp32", fp32, bf16, said, cached, probe=record)
    error = None
    if loss_of is not None:
        with torch.no_grad():
            ref = float(loss_of())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = float(loss_of())
        error = abs(low - ref) / max(abs(ref), 1e-12)
        if not error <= MAX_RELATIVE_ERROR:
            return PrecisionChoice("fp32", fp32, bf16, f"bf16 is {ratio:.2f}x faster but changes the loss by "
                                   f"{100 * error:.1f}% (limit {100 * MAX_RELATIVE_ERROR:g}%)", cached, error, record)
    return PrecisionChoice("bf16", fp32, bf16, said, cached, error, record)


def how_decided(record: dict) -> str:
    """' (98.9% interval 1.62-1.95, 64 rounds)' or what else decided a probe's record, '' for bare rates."""
    if record.get("early_stop"):
        return f" on a first round{'; this CPU has no bf16 arithmetic' if bf16_arithmetic() is False else ''}"
    if record.get("interval"):
        lo, hi = record["interval"]
        return f" ({100 * record['confidence']:.1f}% interval {lo:.2f}-{hi:.2f}, {record['rounds']} rounds)"
    if record.get("rounds"):
        return f" ({record['rounds']} rounds, too few for an interval)"
    return ""


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


def machine_report(caches: tuple[str, ...] = ("precision",)) -> dict[str, Any]:
    """What this machine is and what its probes measured and chose (``vaelab doctor``): the CPU (model, flags,
    whether it has bf16 arithmetic), threads, torch, load now, and every cached precision and compile decision,
    each marked with whether it was taken on this machine as it is now (the same CPU signature, or one of its
    GPUs for a compile decision on CUDA)."""
    model, flags = cpu_info()
    signature = cpu_signature()
    cpu = {"model": model, "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
           "simd_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "asimd", "sve"))),
           "bf16_arithmetic": bf16_arithmetic(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "signature": signature, **when_and_load()}
    here = {signature, *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))}
    decisions = {}
    for name in caches:
        entries = [{"key": k, "here": isinstance(v, dict) and v.get("cpu") in here, "trusted": is_decision(v),
                    **(v if isinstance(v, dict) else {"value": v})} for k, v in read_machine_cache(name).items()]
        decisions[name] = {"file": str(_cache_file(name)), "entries": entries}
    return {"machine": cpu, **decisions}
