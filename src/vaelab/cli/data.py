"""Datasets: `vaelab data list`, `vaelab data fetch`, `vaelab data info` and `vaelab data add`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vaelab.cli.base import app, err
from vaelab.data.registry import DATASETS, data_root, dataset_spec, is_present, known_datasets
from vaelab.data.sources import fetch_dataset, sources_for
from vaelab.data.user import LAYOUTS, add_dataset

data_app = typer.Typer(help="Datasets: list, fetch (with checksums), info, add your own.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ROOT_HELP = "Data directory (default $VAELAB_DATA or ~/.cache/vaelab)."


def name_argument() -> Any:
    *first, last = DATASETS
    return typer.Argument(..., help=f"{', '.join(first)}, {last} or a dataset added with `vaelab data add`.")


@data_app.command("list")
def data_list(root: Optional[Path] = typer.Option(None, help=ROOT_HELP)):
    """Show every dataset (built-in and your own) with its image shape (CxHxW), size, labels and presence."""
    typer.echo(f"{'name':<15}{'image':<11}{'train':>7}{'test':>7}  {'labels':<11}{'present':<9}description")
    for spec in known_datasets(root).values():
        present = "embedded" if spec.embedded else ("yes" if is_present(spec.name, root) else "no")
        shape = "x".join(map(str, spec.image_shape))
        labels = f"{spec.n_classes} classes" if spec.labelled else "none"
        typer.echo(f"{spec.name:<15}{shape:<11}{spec.n_train:>7}{spec.n_test:>7}  {labels:<11}{present:<9}"
                   f"{spec.description}")
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
    spec = dataset_spec(name, root)
    typer.echo(f"{spec.name}: {spec.description}")
    typer.echo(f"  images {'x'.join(map(str, spec.image_shape))}, train {spec.n_train}, test {spec.n_test}, "
               f"classes {spec.n_classes if spec.labelled else 'none (unlabelled)'}")
    if spec.user:
        typer.echo(f"  your own dataset, in {data_root(root) / spec.name}")
        for fname, digest in spec.checksums.items():
            typer.echo(f"  {fname}  sha256 {digest}")
        return
    if spec.embedded:
        typer.echo("  embedded in scikit-learn: always present")
        return
    folder = data_root(root) / spec.name
    typer.echo(f"  folder {folder} ({'present' if is_present(name, root) else 'missing: run `vaelab data fetch ' + name + '`'})")
    for f in spec.files.values():
        typer.echo(f"  {f.name}  sha256(content) {f.raw_sha256}")
    typer.echo("  sources, in order: " + "; ".join(label for label, _ in sources_for(spec, offline=False)))


@data_app.command("add")
def data_add(name: str = typer.Argument(..., help="The new dataset's name (lower-case letters, digits, . _ -)."),
             source: Path = typer.Argument(..., help="A folder of PNG/JPEG images (one subfolder per class, optional), "
                                                     "an .npz (x and optional y, or x_train, x_test and optional "
                                                     "y_train, y_test) or an .npy."),
             test_fraction: str = typer.Option("1/6", "--test-fraction",
                                               help="Share of the images held out for testing (stratified by class "
                                                    "when labelled); ignored when the .npz gives x_test."),
             seed: int = typer.Option(0, "--seed", help="Seed of the split."),
             layout: str = typer.Option("auto", "--layout", help=f"Array layout: {', '.join(LAYOUTS)} (auto: "
                                        "channels-first when axis 1 <= axis 3, else channels-last)."),
             force: bool = typer.Option(False, "--force", help="Replace an existing dataset of this name."),
             root: Optional[Path] = typer.Option(None, help=ROOT_HELP)):
    """Check your images, split them and copy them into the data folder with checksums; then train on them by name."""
    spec = add_dataset(name, source, test_fraction=test_fraction, seed=seed, layout=layout, force=force, root=root)
    labels = f"{spec.n_classes} classes" if spec.labelled else "no labels"
    typer.echo(f"added {spec.name}: images {'x'.join(map(str, spec.image_shape))}, train {spec.n_train}, "
               f"test {spec.n_test}, {labels}, in {data_root(root) / spec.name}")
