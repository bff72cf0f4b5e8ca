"""The IDX format of MNIST and Fashion-MNIST: a big-endian header, then uint8 data.

Images: magic 2051, count, rows, cols, then count*rows*cols bytes. Labels: magic 2049, count, then count bytes.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def encode_images(images: np.ndarray) -> bytes:
    """(N, H, W) uint8 -> IDX bytes."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"IDX images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    n, h, w = images.shape
    return struct.pack(">IIII", IMAGES_MAGIC, n, h, w) + np.ascontiguousarray(images).tobytes()


def encode_labels(labels: np.ndarray) -> bytes:
    """(N,) integers in 0..255 -> IDX bytes."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"IDX labels must be (N,) in 0..255, got shape {labels.shape}")
    return struct.pack(">II", LABELS_MAGIC, labels.shape[0]) + labels.astype(np.uint8).tobytes()


def decode(raw: bytes, what: str = "IDX data") -> np.ndarray:
    """IDX bytes -> (N, H, W) uint8 images or (N,) uint8 labels."""
    if len(raw) < 8:
        raise ValueError(f"{what}: {len(raw)} bytes is too short for an IDX header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic == LABELS_MAGIC:
        shape, offset = (n,), 8
    elif magic == IMAGES_MAGIC:
        if len(raw) < 16:
            raise ValueError(f"{what}: truncated IDX image header")
        h, w = struct.unpack(">II", raw[8:16])
        shape, offset = (n, h, w), 16
    else:
        raise ValueError(f"{what}: magic number {magic} is neither {IMAGES_MAGIC} (images) nor {LABELS_MAGIC} (labels)")
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise ValueError(f"{what}: header says {expected} bytes of data, file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def read_gz(path) -> bytes:
    """The uncompressed bytes of a gzip file."""
    with gzip.open(path, "rb") as fh:
        return fh.read()


def gzip_bytes(raw: bytes) -> bytes:
    """Deterministic gzip (mtime 0), so the same content always gives the same file."""
    return gzip.compress(raw, compresslevel=6, mtime=0)
