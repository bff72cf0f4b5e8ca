"""The benchmarks' one harness: what every script in benchmarks/ shares, so that a script only says what it compares.

- arguments: :func:`parser` adds the common flags (``--json OUT``, also spelled ``--out``; ``--repeats N`` and
  ``--threads N`` where the script has them, each with the script's own default) and :func:`parse` reads them and
  sets torch's threads;
- the machine's facts: :func:`machine` (vaelab's own record, ``vaelab.studies.provenance.machine``, plus the CPU's
  flags one by one, torch's threads and build, the kernel's THP mode and the C library);
- timing: :func:`timed`, :func:`per_call`, :func:`median_seconds`, and :func:`alternate`, which runs contenders in
  alternating rounds so that all of them see the same load; :func:`medians`, :func:`ratio` and
  :func:`round_ratios` (median and quartiles of each round's own ratio) read the samples;
- child processes: :func:`spawn` / :func:`run_child`, with the child's wall time, peak resident memory and minor page
  faults from ``os.wait4`` (the child's own rusage, its waited-for descendants included, as a study's workers;
  started through a small launcher so that the script's own memory does not count);
- JSON: :func:`write_json` writes a script's result atomically with the benchmark's name, the command line, the
  parsed arguments and the machine's facts.

And the pieces more than one script measures: the benchmark models (:data:`MODELS`), a step's unavoidable parts
timed alone (:func:`floor_parts`: products, fused Adam, autocast's casts), and pythae's training pipeline with a
per-epoch clock (:func:`train_pythae`, the peer of the training benchmarks).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from vaelab.cpu import cpu_info
from vaelab.fileio import atomic_write_text
from vaelab.studies.provenance import machine as provenance_machine
from vaelab.trainer import make_optimizer

T = TypeVar("T")
Clock = Callable[[], float]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


# --- arguments -------------------------------------------------------------------------------------------------------

def common(name: str | None, *, repeats: int | None = None, threads: int | None = None) -> argparse.ArgumentParser:
    """The parent parser of the common flags. ``name``: the JSON file's stem under benchmarks/out/ (it may name other
    arguments, ``"allocator-{setting}"``; None: no default); ``repeats`` / ``threads``: the script's defaults, None
    where the script has no such flag (``threads=0``: the flag, defaulting to torch's own choice)."""
    ap = argparse.ArgumentParser(add_help=False)
    default = f"{OUT.relative_to(ROOT)}/{name}.json" if name else None
    ap.add_argument("--json", "--out", dest="json", metavar="OUT", default=default,
                    help=f"where the results go (JSON, written atomically; default {default})")
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats, help=f"rounds (default {repeats})")
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads,
                        help="torch threads (default " + (f"{threads})" if threads else "0: torch's own choice)"))
    return ap


def parser(doc: str | None, name: str | None, *, repeats: int | None = None,
           threads: int | None = None) -> argparse.ArgumentParser:
    """A script's parser: its docstring as the description and the common flags (:func:`common`); the script adds
    its own flags and calls :func:`parse`."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[common(name, repeats=repeats, threads=threads)])


def parse(ap: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, resolve the JSON path (the default under the repository's benchmarks/out/, with the fields it names
    filled in from the other arguments) and set torch's threads where ``--threads`` asks for a number."""
    args = ap.parse_args(argv)
    default = ap.get_default("json")
    if args.json is not None:
        args.json = ROOT / default.format(**vars(args)) if args.json == default else Path(args.json)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args


# --- the machine -----------------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """The machine's facts: vaelab's record (``cpu``: model, flags, threads and torch in one line; ``cores``;
    ``torch``; ``gpu`` if any), and apart: the CPU's model, its flags that decide bf16 speed one by one, torch's
    threads and build, Python, the C library and the kernel's transparent-huge-page mode."""
    model, flags = cpu_info()
    return {**provenance_machine(), "cpu_model": model, "cpu_flags": {f: f in flags for f in CPU_FLAGS},
            "threads": torch.get_num_threads(),
            "torch_build": {"cuda": torch.version.cuda, "git": torch.version.git_version,
                            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
                            "openmp": torch.backends.openmp.is_available()},
            "python": platform.python_version(), "libc": " ".join(platform.libc_ver()).strip(),
            "thp_mode": _thp_mode()}


def _thp_mode() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return "unknown"


# --- timing ----------------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], T], *, clock: Clock = time.perf_counter) -> tuple[float, T]:
    """(seconds, what ``fn`` returned) of one call."""
    t0 = clock()
    out = fn()
    return clock() - t0, out


def per_call(fn: Callable[[], object], calls: int, *, clock: Clock = time.perf_counter) -> float:
    """Seconds per call of ``calls`` calls in a row, timed as one."""
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 3,
                   clock: Clock = time.perf_counter) -> float:
    """Median seconds of ``repeats`` calls timed one by one, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, clock=clock)[0] for _ in range(repeats))


@dataclass
class Rounds:
    """What :func:`alternate` measured: per contender, the seconds of each round's call and what it returned."""
    seconds: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, list[Any]] = field(default_factory=dict)


def alternate(contenders: dict[str, Callable[[int], Any]], rounds: int, *,
              each: Callable[[int, str, float, Any], None] | None = None,
              clock: Clock = time.perf_counter) -> Rounds:
    """Call every contender once per round, in order, ``rounds`` times (A B A B ...: a load that drifts reaches all of
    them alike). A contender gets the round's index; ``each(round, name, seconds, value)`` is told after each call."""
    out = Rounds({name: [] for name in contenders}, {name: [] for name in contenders})
    for r in range(rounds):
        for name, fn in contenders.items():
            seconds, value = timed(lambda: fn(r), clock=clock)
            out.seconds[name].append(seconds)
            out.values[name].append(value)
            if each is not None:
                each(r, name, seconds, value)
    return out


def medians(samples: dict[str, Sequence[float]]) -> dict[str, float]:
    """The median of each contender's samples."""
    return {name: statistics.median(xs) for name, xs in samples.items()}


def ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """median(a) / median(b): how many times b's time a takes."""
    return statistics.median(a) / statistics.median(b)


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile (statistics.quantiles, its default method); one value is both."""
    if len(xs) == 1:
        return xs[0], xs[0]
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return q1, q3


def round_ratios(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of each round's a / b: on a host whose speed drifts, steadier than
    the ratio of the medians."""
    rounds = sorted(x / y for x, y in zip(a, b, strict=True))
    return (statistics.median(rounds), *quartiles(rounds))


# --- child processes -------------------------------------------------------------------------------------------------

@dataclass
class Child:
    """A finished child process: exit code, output, wall seconds, and from its rusage (os.wait4: the child's own, with
    its waited-for descendants, as a study's workers) its peak resident memory and minor page faults."""
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float
    minor_faults: int


# The child is started by this small launcher, not by the script itself: Linux carries the memory a process held when
# it forked (or vforked) and exec'd into the child's ru_maxrss, so a child started by a script holding 300 MB reports
# at least 300 MB whatever it allocates itself. The launcher holds about 10 MB; it times the child, reaps it with
# os.wait4 and leaves the figures in the file named by its first argument.
_LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0,
               "peak_rss_kb": usage.ru_maxrss, "minor_faults": usage.ru_minflt}, f)
"""


class Running:
    """A child started by :func:`spawn`; :meth:`wait` reaps it (children side by side: start them all, then wait)."""

    def __init__(self, cmd: Sequence[str | os.PathLike], env: dict[str, str] | None = None):
        self.cmd = [str(a) for a in cmd]
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        fd, self._facts = tempfile.mkstemp(prefix="vaelab-child-", suffix=".json")
        os.close(fd)
        self._proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, self._facts, *self.cmd], env=env,
                                      stdout=self._out, stderr=self._err, text=True)

    def wait(self, check: bool = True) -> Child:
        """Wait for the child; with ``check``, a failure ends the script with the command and the end of its stderr."""
        launcher = self._proc.wait()
        try:
            facts = json.loads(Path(self._facts).read_text() or "null")
        finally:
            os.unlink(self._facts)
        facts = facts or {"returncode": launcher or 1, "seconds": math.nan, "peak_rss_kb": math.nan,
                          "minor_faults": -1}  # the launcher could not start the command
        with self._out, self._err:
            self._out.seek(0), self._err.seek(0)
            child = Child(facts["returncode"], self._out.read(), self._err.read(), facts["seconds"],
                          facts["peak_rss_kb"] / 1024, facts["minor_faults"])  # ru_maxrss: kB on Linux
        if check and child.returncode != 0:
            shown = shlex.join(a if len(a) < 200 else a[:60] + " ..." for a in self.cmd)
            raise SystemExit(f"failed ({child.returncode}): {shown}\n{child.stderr[-3000:]}")
        return child


def spawn(cmd: Sequence[str | os.PathLike], env: dict[str, str] | None = None) -> Running:
    """Start ``cmd`` (its output kept in temporary files, so a chatty child never blocks)."""
    return Running(cmd, env)


def run_child(cmd: Sequence[str | os.PathLike], env: dict[str, str] | None = None, check: bool = True) -> Child:
    """Run ``cmd`` to its end: :class:`Child`."""
    return spawn(cmd, env).wait(check)


def python(code: str, *args: object) -> list[str]:
    """The command that runs ``code`` in a fresh Python of this environment with ``args``."""
    return [sys.executable, "-c", code, *map(str, args)]


# --- JSON ------------------------------------------------------------------------------------------------------------

def command_line() -> str:
    """The command as typed: ``python benchmarks/<script>.py ...``."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def save(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (a reader sees the old file or the new one, never half of one);
    values JSON has no type for (paths) as their text."""
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    return path


def write_json(args: argparse.Namespace, result: dict[str, Any], path: str | os.PathLike | None = None) -> Path:
    """Write a script's ``result`` to ``path`` (default ``args.json``) atomically, after the benchmark's name, the
    command line, the parsed arguments and the machine's facts (taken now: torch's threads as the script ran)."""
    header = {"benchmark": Path(sys.argv[0]).stem, "command": command_line(),
              "arguments": vars(args),
              "machine": machine()}
    return save(path or args.json, {**header, **result})


# --- what more than one script measures -------------------------------------------------------------------------------

MODELS = {  # the step benchmarks' models (step_overhead.py, step_replay.py, allocator.py)
    "pythae-default": {"data": {"name": "mnist", "pixels": "dynamic", "train_size": 25600},
                       "model": {"hidden": [512], "latent_dim": 16, "posterior": "diagonal"},
                       "train": {"batch_size": 128, "lr": 1e-3}},
    "doc002-200": {"data": {"name": "fashion-mnist", "pixels": "dynamic", "train_size": 25600},
                   "model": {"hidden": [256, 256], "latent_dim": 200, "posterior": "isotropic"},
                   "train": {"batch_size": 256, "lr": 1e-4}},
    # document 000's big latent (no products-alone floor: its convolutions are not timed apart); not run by default
    "doc000-8x8x1024": {"data": {"name": "mnist", "pixels": "dynamic", "train_size": 7680},
                        "model": {"network": "conv-spatial", "conv_channels": [32, 64], "posterior": "diagonal",
                                  "latent_channels": 1024},
                        "train": {"batch_size": 128, "lr": 1e-3}},
}
DEFAULT_MODELS = "pythae-default,doc002-200"


def _linear_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def gemm_seconds(model: torch.nn.Module, batch: int, dtype: torch.dtype, members: int = 1,
                 repeats: int = 30) -> tuple[float, float]:
    """(median seconds, GFLOP) of one step's matrix products at the model's Linear shapes in ``dtype``: forward x W^T
    of every layer, backward dY^T x of every layer and dY W of every layer but the first (the images need no
    gradient); for ``members`` stacked copies, batched products."""
    ops, flop = [], 0
    for i, m in enumerate(_linear_layers(model)):
        x = torch.randn(members, batch, m.in_features, dtype=dtype)
        w = torch.randn(members, m.in_features, m.out_features, dtype=dtype)
        dy = torch.randn(members, batch, m.out_features, dtype=dtype)
        if members == 1:
            x, w, dy = x[0], w[0], dy[0]
        ops.append((x, w, dy, i > 0))
        flop += 2 * members * batch * m.in_features * m.out_features * (3 if i > 0 else 2)

    def step() -> None:
        for x, w, dy, input_grad in ops:
            x @ w  # forward
            x.transpose(-1, -2) @ dy  # the weight's gradient
            if input_grad:
                dy @ w.transpose(-1, -2)  # the input's gradient

    return median_seconds(step, repeats), flop / 1e9


def _stacked_parameters(model: torch.nn.Module, members: int) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.randn(members, *p.shape)) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def adam_seconds(model: torch.nn.Module, members: int = 1, repeats: int = 30) -> float:
    """Median seconds of one fused Adam step over ``members`` stacked copies of the model's parameters (float32
    master weights, gradients and two moments: 28 bytes read and written per parameter)."""
    optimizer = make_optimizer(torch.nn.ParameterList(_stacked_parameters(model, members)), 1e-3)
    return median_seconds(optimizer.step, repeats)


def cast_seconds(model: torch.nn.Module, members: int = 1, repeats: int = 30) -> float:
    """Median seconds of bf16 autocast's casts of one step: every parameter to bf16, and a bf16 gradient of each
    back to float32 (12 bytes per parameter)."""
    params = _stacked_parameters(model, members)
    grads = [p.grad.to(torch.bfloat16) for p in params]

    def casts() -> None:
        for p, g in zip(params, grads):
            p.detach().to(torch.bfloat16)
            g.float()

    return median_seconds(casts, repeats)


def floor_parts(model: torch.nn.Module, batch: int, precision: str, members: int = 1) -> dict:
    """What a training step of an MLP VAE cannot avoid, each part timed alone at the model's shapes, for ``members``
    stacked copies: milliseconds of its products (:func:`gemm_seconds`), fused Adam and (bf16) autocast's casts,
    their sum (the step's floor: no step with float32 Adam under autocast beats it here, since the
    reparameterisation, the likelihood, the activations, autograd and dispatch come on top) and the GFLOP."""
    bf16 = precision == "bf16"
    gemm, gflop = gemm_seconds(model, batch, torch.bfloat16 if bf16 else torch.float32, members)
    parts = {"products_ms": 1e3 * gemm, "adam_ms": 1e3 * adam_seconds(model, members),
             "casts_ms": 1e3 * cast_seconds(model, members) if bf16 else 0.0}
    return {**parts, "floor_ms": sum(parts.values()), "gflop": gflop}


def train_pythae(model, epochs: int, lr: float, batch: int, x_train: torch.Tensor, x_test: torch.Tensor,
                 device: str = "cpu") -> dict:
    """Train ``model`` (a pythae 0.1.2 model) with its TrainingPipeline and Adam on ``device`` (cpu or cuda);
    {"epoch_seconds": [...], "eval_loss": [...]} per epoch (training and its evaluation)."""
    from pythae.pipelines import TrainingPipeline  # optional: pip install -e '.[bench]'
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Clock(TrainingCallback):
        def __init__(self):
            self.begin, self.seconds, self.eval_loss = 0.0, [], []

        def on_epoch_begin(self, training_config, **kwargs):
            self.begin = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            self.seconds.append(time.perf_counter() - self.begin)

        def on_log(self, training_config, logs, **kwargs):
            self.eval_loss.append(float(logs["eval_epoch_loss"]))

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, num_epochs=epochs, learning_rate=lr,
                                   per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
                                   optimizer_cls="Adam", no_cuda=device != "cuda")
        TrainingPipeline(training_config=config, model=model)(train_data=x_train, eval_data=x_test, callbacks=[clock])
    return {"epoch_seconds": clock.seconds, "eval_loss": clock.eval_loss}
