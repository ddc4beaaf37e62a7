"""Replay buffer: bounds, reservoir uniformity, class-balanced herding, atomic persistence."""

import numpy as np
import pytest
import torch

from genba.continual.buffer import ReplayBuffer, herding_order
from genba.errors import GenbaError


def rows(n, start=0, classes=2, dim=4):
    y = torch.arange(start, start + n) % classes
    return {"x": torch.randn(n, dim), "y": y, "id": torch.arange(start, start + n)}


def test_reservoir_is_bounded_and_uniform_over_everything_seen():
    counts = np.zeros(200)
    for seed in range(200):
        buf = ReplayBuffer(20, "reservoir", seed=seed)
        for t in range(4):
            buf.add(rows(50, start=50 * t))
        assert len(buf) == 20 and buf.seen == 200
        counts[buf.rows["id"].numpy()] += 1
    per_task = counts.reshape(4, 50).sum(1) / counts.sum()
    assert np.allclose(per_task, 0.25, atol=0.04)  # each task keeps about its share


def test_herding_is_class_balanced_and_keeps_old_exemplars_in_order():
    buf = ReplayBuffer(12, "herding")
    first = rows(40, classes=2)
    buf.add(first)
    assert len(buf) == 12 and torch.bincount(buf.rows["y"]).tolist() == [6, 6]
    kept = buf.rows["id"][buf.rows["y"] == 0][:4].tolist()
    second = rows(40, start=100, classes=2)
    second["y"] = second["y"] + 2
    buf.add(second)
    assert len(buf) <= 12 and torch.bincount(buf.rows["y"]).tolist() == [3, 3, 3, 3]
    assert buf.rows["id"][buf.rows["y"] == 0].tolist() == kept[:3]  # the prefix of the herding order


def test_herding_picks_the_mean_first():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    assert herding_order(x, 1).tolist() == [2]


def test_persistence_round_trip_and_refusals(tmp_path):
    buf = ReplayBuffer(8, "reservoir", seed=3)
    buf.add(rows(30))
    buf.tasks_done = 1
    path = tmp_path / "buffer.safetensors"
    buf.save(path)
    again = ReplayBuffer.load(path)
    assert again.seen == 30 and again.tasks_done == 1 and again.policy == "reservoir"
    assert all(torch.equal(again.rows[k], buf.rows[k]) for k in buf.rows)
    buf.add(rows(30, start=30))
    again.add(rows(30, start=30))
    assert torch.equal(again.rows["id"], buf.rows["id"])  # the RNG state survived too
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write: no temp file left
    path.write_bytes(b"garbage")
    with pytest.raises(GenbaError, match="truncated"):
        ReplayBuffer.load(path)
    with pytest.raises(GenbaError, match="positive integer"):
        ReplayBuffer(0)
    with pytest.raises(GenbaError, match="unknown replay policy"):
        ReplayBuffer(5, "fifo")
