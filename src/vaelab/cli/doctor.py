"""`vaelab doctor`: what this machine is, and what its probes (`train.precision: auto`, `train.compile: auto`)
measured and chose here, and why."""
from __future__ import annotations

import json

import typer

from vaelab.cli.base import app, json_option
from vaelab.precision import MIN_SPEEDUP, how_decided, machine_report
from vaelab.training_step import COMPILE_CACHE, COMPILE_MIN_SPEEDUP


def _what(name: str, entry: dict) -> str:
    """The products, step or model a cached decision is for, in a few words."""
    if name == "precision":
        shapes = entry.get("shapes") or []
        if shapes and shapes[0] == "step":
            return f"training step, batch {shapes[1]}, {len(shapes[2])} parameter tensors"
        return "products " + ", ".join("x".join(map(str, s)) for s in shapes)
    batch = "x".join(map(str, entry.get("batch", [])))
    return f"{entry.get('model', '?')}, {entry.get('objective', '?')}, batch {batch}, " \
           f"{entry.get('precision', '?')} on {entry.get('device', '?')}"


def _decision_line(name: str, entry: dict) -> str:
    """One cached decision: what it chose, the ratio and its interval, the rates or step times, when, load."""
    if not entry["trusted"]:
        said = (f"fp32 {entry['fp32']:.1f}, bf16 {entry['bf16']:.1f} GFLOP/s, " if name == "precision" and
                isinstance(entry.get("fp32"), (int, float)) and isinstance(entry.get("bf16"), (int, float)) else "")
        return f"{_what(name, entry)}: {said}written before decisions carried an interval; probed afresh on next use"
    if name == "precision":
        chose, speeds = entry["decision"], f"fp32 {entry['fp32']:.1f}, bf16 {entry['bf16']:.1f} GFLOP/s"
        ratio = f"bf16 at {entry['ratio']:.2f}x fp32" + how_decided(entry)
    else:
        chose = entry.get("choice")
        speeds = (f"eager {entry.get('eager_step_ms')} ms, compiled {entry.get('compiled_step_ms')} ms, "
                  f"compiling {entry.get('compile_s')} s")
        ratio = f"compiled at {entry['ratio']:.2f}x eager" + how_decided(entry)
    load = " ".join(map(str, entry.get("load") or [])) or "?"
    spread = f", spread {100 * entry['spread']:.0f}%" if entry.get("spread") is not None else ""
    return f"{_what(name, entry)}: {chose}; {ratio}{spread}; {speeds}; {entry['when']}, load {load}"


@app.command()
def doctor(as_json: bool = json_option("the report")):
    """Show this machine and the precision and compile decisions its probes cached here.

    The machine: CPU model and flags, cores, threads, torch. Each decision: what it chose, the ratio that decided
    it, its interval, when it was taken and under what load."""
    report = machine_report(("precision", COMPILE_CACHE))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    m = report["machine"]
    arithmetic = {True: "yes", False: "no (PyTorch emulates it)", None: "unknown (flags unreadable)"}
    typer.echo("machine")
    typer.echo(f"  cpu      {m['model']}, {m['cores']} cores")
    typer.echo(f"  flags    bf16: {' '.join(m['bf16_flags']) or 'none'} (bf16 arithmetic: "
               f"{arithmetic[m['bf16_arithmetic']]}); vector: {' '.join(m['simd_flags']) or 'none'}")
    typer.echo(f"  torch    {m['torch']}, {m['threads']} threads")
    typer.echo(f"  load     {' '.join(map(str, m['load'] or [])) or '?'} (1, 5, 15 min) at {m['when']}")
    thresholds = {"precision": f"bf16 needs {MIN_SPEEDUP}x", COMPILE_CACHE: f"compiled needs {COMPILE_MIN_SPEEDUP}x"}
    for name, needs in thresholds.items():
        part = report[name]
        here = [e for e in part["entries"] if e["here"]]
        typer.echo(f"{name} decisions ({needs}; {part['file']})")
        for entry in here:
            typer.echo(f"  {_decision_line(name, entry)}")
        if not here:
            typer.echo(f"  none cached for this machine's signature ({m['signature']})")
        others = len(part["entries"]) - len(here)
        if others:
            typer.echo(f"  and {others} for other machines, thread counts or torch versions (--json lists them)")
