"""Writing a figure as PNG and SVG (`vaelab.plotting.save_figure`, which every analysis and report figure goes
through): constrained layout fitted once and kept for the second format, against solving it again for each format
(what save_figure did before 2026-12-07), side by side in alternating rounds.

The figure is a typical analysis figure: six image panels (60 x 60 each) with titles, axis labels and a suptitle,
on vaelab's style (constrained layout on).

    python benchmarks/figure_save.py [--repeats 7] [--figures 5]
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import harness
import numpy as np

from vaelab.fileio import atomic_write_bytes
from vaelab.plotting import FORMATS, pyplot, save_figure


def make_figure(plt):
    fig, axes = plt.subplots(2, 3, figsize=(10, 6))
    rng = np.random.default_rng(0)
    for ax in axes.flat:
        ax.imshow(rng.random((60, 60)), cmap="gray")
        ax.set_title("a panel title")
        ax.set_xlabel("an axis label")
    fig.suptitle("a figure title")
    return fig


def solved_per_format(fig, plt, folder, stem) -> None:
    """save_figure as it was: each format fits the layout afresh (the same atomic writes)."""
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        atomic_write_bytes(Path(folder) / f"{stem}.{fmt}", buf.getvalue())
    plt.close(fig)


def main() -> None:
    ap = harness.parser(__doc__, "figure-save", repeats=7)
    ap.add_argument("--figures", type=int, default=5, help="figures written per round and contender (default 5)")
    args = harness.parse(ap)
    plt = pyplot()
    with tempfile.TemporaryDirectory() as folder:
        contenders = {
            "layout solved per format": lambda r: [solved_per_format(make_figure(plt), plt, folder, f"b{i}")
                                                   for i in range(args.figures)],
            "save_figure (layout kept)": lambda r: [save_figure(make_figure(plt), folder, f"f{i}")
                                                    for i in range(args.figures)],
        }
        for fn in contenders.values():  # warm-up: fonts, caches
            fn(0)
        rounds = harness.alternate(contenders, args.repeats)
    per_figure = {k: v / args.figures for k, v in harness.medians(rounds.seconds).items()}
    r, q1, q3 = harness.round_ratios(rounds.seconds["layout solved per format"], rounds.seconds["save_figure (layout kept)"])
    for name, s in per_figure.items():
        print(f"{name}: {s:.3f} s per figure (PNG + SVG, figure drawn included)")
    print(f"speed-up {r:.2f}x (quartiles {q1:.2f}-{q3:.2f} over {args.repeats} alternating rounds)")
    path = harness.write_json(args, {"seconds": rounds.seconds, "seconds_per_figure": per_figure,
                                     "speedup": {"median": r, "q1": q1, "q3": q3}})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
