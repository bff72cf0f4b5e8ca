"""Optional experiment tracking: a finished run's per-epoch metrics (metrics.jsonl) sent to TensorBoard or MLflow.

Metrics are logged once the run's training is done (step = epoch), so a resumed run is logged exactly once and
identically to an uninterrupted one. A marker file in the run folder keeps a re-run study from logging twice."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaelab.errors import ConfigError

SCALARS = ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl", "seconds")


def parse_tracking(kind: str | None, uri: str | None, study_folder: Path) -> dict | None:
    """--track tensorboard|mlflow (+ --track-uri) -> the tracking dict the executors pass along."""
    if not kind:
        return None
    if kind == "tensorboard":
        return {"kind": kind, "uri": str(Path(uri) if uri else study_folder / "tensorboard")}
    if kind == "mlflow":
        return {"kind": kind, "uri": uri or f"sqlite:///{(study_folder / 'mlflow.db').resolve()}", "experiment": study_folder.name}
    raise ConfigError(f"--track {kind!r} is not one of tensorboard, mlflow")


def log_run(run, tracking: dict[str, Any]) -> None:
    marker = Path(run.path) / f".tracked-{tracking['kind']}"
    if marker.exists():
        return
    rows = run.metrics
    if tracking["kind"] == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--track tensorboard needs TensorBoard: pip install 'vaelab[tracking]'") from None
        writer = SummaryWriter(str(Path(tracking["uri"]) / run.config.name))
        for r in rows:
            for k in SCALARS:
                if isinstance(r.get(k), (int, float)):
                    writer.add_scalar(k, r[k], r["epoch"])
            if r.get("kl_per_dim"):
                writer.add_scalar("active_dims", r["kl_per_dim"]["active"], r["epoch"])
        writer.close()
    else:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("--track mlflow needs MLflow: pip install 'vaelab[tracking]'") from None
        mlflow.set_tracking_uri(tracking["uri"])
        mlflow.set_experiment(tracking.get("experiment", "vaelab"))
        with mlflow.start_run(run_name=run.config.name):
            flat = {f"{sec}.{k}": v for sec, d in run.config.model_dump(mode="json").items() if isinstance(d, dict)
                    for k, v in d.items()}
            mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flat.items()})
            for r in rows:
                mlflow.log_metrics({k: float(r[k]) for k in SCALARS if isinstance(r.get(k), (int, float))}, step=r["epoch"])
    marker.write_text("logged\n")
