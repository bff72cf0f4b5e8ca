"""Datasets: `vaelab data list`, `vaelab data fetch` and `vaelab data info`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vaelab.cli.base import app, err
from vaelab.data import DATASETS, data_root, dataset_spec, fetch_dataset, is_present
from vaelab.data.sources import sources_for

data_app = typer.Typer(help="Datasets: list, fetch (with checksums), info.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ROOT_HELP = "Data directory (default $VAELAB_DATA or ~/.cache/vaelab)."


def name_argument() -> Any:
    *first, last = DATASETS
    return typer.Argument(..., help=f"{', '.join(first)} or {last}.")


@data_app.command("list")
def data_list(root: Optional[Path] = typer.Option(None, help=ROOT_HELP)):
    """Show every registered dataset with its size and whether it is present."""
    typer.echo(f"{'name':<15}{'image':<9}{'train':>7}{'test':>7}  {'present':<8} description")
    for spec in DATASETS.values():
        present = "embedded" if spec.embedded else ("yes" if is_present(spec.name, root) else "no")
        shape = "x".join(map(str, spec.image_shape[1:]))
        typer.echo(f"{spec.name:<15}{shape:<9}{spec.n_train:>7}{spec.n_test:>7}  {present:<8} {spec.description}")
    typer.echo(f"data directory: {data_root(root)}")


@data_app.command("fetch")
def data_fetch(name: str = name_argument(),
               root: Optional[Path] = typer.Option(None, help=ROOT_HELP),
               force: bool = typer.Option(False, "--force", help="Delete and fetch again even if the files verify."),
               offline: bool = typer.Option(False, "--offline", help="Skip the internet mirrors; use offline sources only.")):
    """Download or copy a dataset's files, verify each by checksum, and put them in place atomically."""
    fetch_dataset(name, root, force=force, offline=offline or None, log=err)


@data_app.command("info")
def data_info(name: str = name_argument(),
              root: Optional[Path] = typer.Option(None, help="Data directory.")):
    """Show a dataset's files, checksums, sources and presence."""
    spec = dataset_spec(name)
    typer.echo(f"{spec.name}: {spec.description}")
    typer.echo(f"  images {'x'.join(map(str, spec.image_shape))}, train {spec.n_train}, test {spec.n_test}, classes {spec.n_classes}")
    if spec.embedded:
        typer.echo("  embedded in scikit-learn: always present")
        return
    folder = data_root(root) / spec.name
    typer.echo(f"  folder {folder} ({'present' if is_present(name, root) else 'missing: run `vaelab data fetch ' + name + '`'})")
    for f in spec.files.values():
        typer.echo(f"  {f.name}  sha256(content) {f.raw_sha256}")
    typer.echo("  sources, in order: " + "; ".join(label for label, _ in sources_for(spec, offline=False)))
