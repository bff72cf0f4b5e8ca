"""A study's results table: results.csv (one row per run, for people and spreadsheets) and results.json (the same
rows, for the report), written atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from vaelab.fileio import atomic_write_text

FIRST_COLUMNS = ["run", "status", "reason"]


def write_results(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """results.csv (one row per run, the union of columns) and results.json, atomically."""
    columns = list(FIRST_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns and key not in ("trained_now", "wall_seconds"):
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(folder / "results.csv", buf.getvalue())
    atomic_write_text(folder / "results.json", json.dumps(rows, indent=1, default=str) + "\n")
    return folder / "results.csv"


def read_results(folder: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((Path(folder) / "results.json").read_text())
    except (OSError, ValueError):
        return []
