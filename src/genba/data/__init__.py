"""Datasets as data: one table of built-ins, image folders / CSVs for user data, seeded splits.

    ds = load_dataset("textile")            # or "folder:/data/site", "csv:labels.csv"
    pool, val = train_val_split(ds, val_per_class=4, seed=0)   # val from train, never test
    shots = sample_few_shot(ds, pool, shots=16, seed=0)         # K per class, nested in K
    img = ds.image(shots[0])                # RGB PIL image, decoded on demand
"""

from genba.data.builtin import DATASETS
from genba.data.registry import available_datasets, load_dataset
from genba.data.safe_pickle import UnsafePickleError, load_arrays
from genba.data.splits import sample_few_shot, stratified_split, train_val_split
from genba.data.table import Dataset, DatasetEntry
from genba.data.user import CorruptImageWarning, load_csv, load_folder

__all__ = [
    "DATASETS",
    "CorruptImageWarning",
    "Dataset",
    "DatasetEntry",
    "UnsafePickleError",
    "available_datasets",
    "load_arrays",
    "load_csv",
    "load_dataset",
    "load_folder",
    "sample_few_shot",
    "stratified_split",
    "train_val_split",
]
