"""The GPU check's Python side (benchmarks/gpu_check.sh): what the machine offers, and the JSON of figures.

    python benchmarks/gpu_check.py env                 # one JSON line: python, torch, CUDA, GPU, missing modules
    python benchmarks/gpu_check.py collect WORK OUT    # WORK: the script's scratch folder -> OUT/gpu_check.json

Only the standard library at the top: ``collect`` must run where torch or vaelab's dependencies are missing, to
say so. Parts are read from WORK/steps.tsv (name, exit status, seconds, note), written by the shell script."""
from __future__ import annotations

import csv
import importlib
import json
import os
import platform
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# what vaelab imports (pyproject's dependencies), what the tests need, and the benchmark's peer
MODULES = ("torch", "numpy", "scipy", "sklearn", "pydantic", "yaml", "typer", "safetensors", "tqdm", "matplotlib",
           "jinja2", "pytest", "pytest_timeout", "pythae")


def env() -> dict:
    """Python, torch and its CUDA build, the GPU, and the modules that do not import."""
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure means the part that needs it cannot run
            missing.append(f"{name} ({type(exc).__name__})")
    out = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
           "cores": os.cpu_count(), "missing_modules": missing}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return {**out, "torch": None, "torch_error": str(exc)}
    out.update({"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "cuda_available": torch.cuda.is_available()})
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                    "gpus": torch.cuda.device_count(), "multiprocessors": p.multi_processor_count})
    try:
        import vaelab  # noqa: F401
        out["vaelab_imports"] = True
    except Exception as exc:  # noqa: BLE001
        out.update({"vaelab_imports": False, "vaelab_error": f"{type(exc).__name__}: {exc}"})
    return out


def steps(work: Path) -> dict:
    """Each part the script ran: its exit status, seconds and note (124: stopped at its time limit)."""
    out = {}
    path = work / "steps.tsv"
    if path.exists():
        for name, code, seconds, note in csv.reader(path.open(), delimiter="\t"):
            out[name] = {"exit": int(code), "seconds": float(seconds), "ok": code == "0",
                         **({"timed_out": True} if code in ("124", "137") else {}), **({"note": note} if note else {})}
    return out


def tests(junit: Path) -> dict | None:
    """Pass, fail, error and skip counts (and the failing tests' names) from pytest's JUnit XML."""
    if not junit.exists():
        return {"error": "no JUnit XML: pytest did not run or was stopped at the part's time limit (see the log)"}
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable JUnit XML: {exc}"}
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failing": [], "skip_reasons": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            counts["failing"].append(name)
        elif case.find("error") is not None:
            counts["errors"] += 1
            counts["failing"].append(name)
        elif (skip := case.find("skipped")) is not None:
            counts["skipped"] += 1
            counts["skip_reasons"].append(skip.get("message", ""))
        else:
            counts["passed"] += 1
    counts["skip_reasons"] = sorted(set(counts["skip_reasons"]))
    return counts


def pythae(path: Path) -> dict | None:
    """Median epoch seconds of vaelab's runs and pythae's, and the speed-ups, from train_vs_pythae.py's JSON."""
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    return {k: r.get(k) for k in ("epochs", "median_epoch_seconds", "speedup_vs_pythae", "final_test_neg_elbo",
                                  "auto_chose", "total_seconds", "train_gflops")}


def study(folder: Path) -> dict | None:
    """Runs finished of those planned, and the invocations' wall time from provenance.json."""
    if not folder.exists():
        return None
    runs = folder / "runs"
    states = [json.loads(p.read_text()).get("state") for p in sorted(runs.glob("*/status.json"))]
    out = {"folder": folder.name, "runs_started": len(states), "runs_finished": states.count("finished"),
           "results_written": (folder / "results.csv").exists()}
    prov = folder / "provenance.json"
    if prov.exists():
        calls = json.loads(prov.read_text()).get("invocations", [])
        out["wall_seconds"] = round(sum(c.get("seconds", 0.0) for c in calls), 1)
        out["complete"] = bool(calls) and calls[-1].get("complete", False)
    epochs = [json.loads(line)["seconds"] for p in runs.glob("*/metrics.jsonl") for line in p.read_text().splitlines()
              if line.strip()]
    if epochs:
        out["median_epoch_seconds_per_run"] = round(statistics.median(epochs), 4)
    return out


def collect(work: Path, out: Path) -> dict:
    env_path = work / "env.json"
    parts = steps(work)
    result = {"dry_run": (work / "dry_run").exists(),
              "env": json.loads(env_path.read_text()) if env_path.exists() else None,
              "parts": parts, "tests": tests(work / "junit.xml") if "tests" in parts else None,
              "train_vs_pythae": pythae(out / "train_vs_pythae.json"),
              "study": study(Path((work / "study_folder").read_text().strip()))
              if (work / "study_folder").exists() else None}
    result["not_run"] = [name for name, part in parts.items() if not part["ok"]]
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out / "gpu_check.json")
    return result


def main() -> None:
    if sys.argv[1:2] == ["env"]:
        print(json.dumps(env()))
    elif sys.argv[1:2] == ["collect"] and len(sys.argv) == 4:
        r = collect(Path(sys.argv[2]), Path(sys.argv[3]))
        print(json.dumps({k: r[k] for k in ("parts", "tests", "not_run")}, indent=1))
    else:
        sys.exit("usage: gpu_check.py env | collect WORK OUT")


if __name__ == "__main__":
    main()
