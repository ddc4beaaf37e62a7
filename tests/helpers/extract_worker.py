"""Run under torchrun: extract a folder dataset's features with the tiny encoder into a cache folder
(argv: folder, cache dir, batch size). Every process encodes its shard; rank 0's cache entry is compared
with a single-process one by tests/test_extract_parallel.py."""

import sys

from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.features import extract_features

folder, cache_dir, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
encoder = load_encoder("tiny")
encoder.batch_size = batch
extract_features(encoder, load_dataset(f"folder:{folder}"), "train", cache=TensorCache(cache_dir), progress=False)
