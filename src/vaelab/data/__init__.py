"""Datasets: a registry of names, verified sources, user datasets (`vaelab data add`), in-memory tensors and pixel
modes."""
from vaelab.data.load import Dataset, is_present, load_dataset
from vaelab.data.pixels import PIXEL_MODES, PixelSampler
from vaelab.data.registry import DATASETS, DatasetSpec, data_root, dataset_spec, known_datasets, user_datasets
from vaelab.data.sources import fetch_dataset
from vaelab.data.user import add_dataset

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "PIXEL_MODES", "PixelSampler", "add_dataset", "data_root",
           "dataset_spec", "fetch_dataset", "is_present", "known_datasets", "load_dataset", "user_datasets"]
