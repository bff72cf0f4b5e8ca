"""Animated GIFs from matplotlib frames (Pillow, which matplotlib already needs), written atomically."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from vaelab.fileio import atomic_write_bytes


def figure_to_rgb(fig) -> np.ndarray:
    """A drawn matplotlib figure as an (H, W, 3) uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_gif(frames: list[np.ndarray], path: str | Path, ms_per_frame: int = 120, hold_last_ms: int = 1200) -> str:
    """Frames (H, W, 3) uint8 -> an endlessly looping GIF; the last frame is held a little longer."""
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for f in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [hold_last_ms]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=True)
    atomic_write_bytes(Path(path), buf.getvalue())
    return str(path)
