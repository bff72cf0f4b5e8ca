"""Datasets: a registry of names, verified sources, in-memory tensors and pixel modes."""
from vaelab.data.load import Dataset, is_present, load_dataset
from vaelab.data.pixels import PIXEL_MODES, PixelSampler
from vaelab.data.registry import DATASETS, DatasetSpec, data_root, dataset_spec
from vaelab.data.sources import fetch_dataset

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "PIXEL_MODES", "PixelSampler", "data_root", "dataset_spec",
           "fetch_dataset", "is_present", "load_dataset"]
