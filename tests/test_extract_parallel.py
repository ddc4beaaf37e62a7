"""Extraction in worker processes and across torchrun processes computes exactly the single-process
features: same batches, same rows, same cache entry."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from conftest import make_color_folder
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.features import extract_features, feature_key

WORKER = Path(__file__).parent / "helpers" / "extract_worker.py"


def test_worker_processes_give_the_inline_features(tmp_path, one_thread):
    dataset = load_dataset(f"folder:{make_color_folder(tmp_path / 'f', per_class=7)}")
    encoder = load_encoder("tiny")
    encoder.batch_size = 4
    inline = extract_features(encoder, dataset, "train", progress=False, workers=0)
    pooled = extract_features(encoder, dataset, "train", progress=False, workers=2)
    assert torch.equal(inline.image, pooled.image) and torch.equal(inline.visual, pooled.visual)
    assert torch.equal(inline.indices, pooled.indices)


def test_two_process_torchrun_extraction_equals_one_process(tmp_path):
    folder = make_color_folder(tmp_path / "f", per_class=9)
    one, two = tmp_path / "one", tmp_path / "two"
    encoder = load_encoder("tiny")
    encoder.batch_size = 5  # 27 rows, batches of 5: the processes get 3 and 3 batches (the last one short)
    dataset = load_dataset(f"folder:{folder}")
    single = extract_features(encoder, dataset, "train", cache=TensorCache(one), progress=False)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")
    subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29531", str(WORKER), str(folder), str(two), "5"],
                   env=env, check=True, timeout=300, capture_output=True)
    key = feature_key(encoder, dataset, "train", None)
    path_one, path_two = TensorCache(one).path("features", key), TensorCache(two).path("features", key)
    assert path_two.is_file()
    merged = TensorCache(two).load("features", key)
    assert torch.equal(merged["image"], single.image) and torch.equal(merged["visual"], single.visual)
    assert torch.equal(merged["indices"], single.indices) and torch.equal(merged["labels"], single.labels)
    assert path_one.read_bytes() == path_two.read_bytes()
