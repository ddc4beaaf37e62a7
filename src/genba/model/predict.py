"""Classify unsorted images with any model: path, class, probability, top-k; CSV or JSON lines.

    rows, skipped = predict_paths(predictor, paths, top_k=3)   # one row per decoded image
    write_rows(rows, "out.csv", "csv")                          # or "jsonl"; None -> stdout

A file that cannot be decoded is skipped with one warning and counted, never the end of the batch.
Test-time models (TDA, DMN) keep adapting over the images in the order given, within one call.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genba.model.images import decode_images

FORMATS = ("csv", "jsonl")


def predict_paths(predictor, paths: list[Path], *, top_k: int = 1, batch_size: int = 32,
                  progress: bool = False) -> tuple[list[dict], list[Path]]:
    """(rows, skipped paths); a row: path, class, probability, top_k [(class, probability), ...]."""
    classes = predictor.classes
    k = max(1, min(top_k, len(classes)))
    rows: list[dict] = []
    skipped: list[Path] = []
    images = decode_images(paths, skipped)
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, leave=False)
    try:
        while batch := list(itertools.islice(images, batch_size)):
            probs = predictor.probabilities([image for _, image in batch]).float()
            values, indices = probs.topk(k, dim=1)
            for (path, _), v, i in zip(batch, values.tolist(), indices.tolist()):
                rows.append({"path": str(path), "class": classes[i[0]], "probability": v[0],
                             "top_k": [[classes[c], p] for c, p in zip(i, v)]})
            bar.update(len(rows) + len(skipped) - bar.n)
    finally:
        bar.close()
    return rows, skipped


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    out = io.StringIO()
    k = max((len(r["top_k"]) for r in rows), default=1)
    writer = csv.writer(out, lineterminator="\n")
    header = ["path", "class", "probability"]
    if k > 1:
        header += [f"{name}{j + 1}" for j in range(k) for name in ("class", "probability")]
    writer.writerow(header)
    for r in rows:
        line = [r["path"], r["class"], f"{r['probability']:.6f}"]
        if k > 1:
            line += [x for c, p in r["top_k"] for x in (c, f"{p:.6f}")]
        writer.writerow(line)
    return out.getvalue()


def write_rows(rows: list[dict], out: str | Path | None, fmt: str) -> None:
    text = format_rows(rows, fmt)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from genba.cache import atomic_write_bytes

        atomic_write_bytes(Path(out), text.encode())


def probabilities_of(predictor, images, batch_size: int = 64) -> torch.Tensor:
    """(N, C) probabilities of a list of PIL images, in batches."""
    out = [predictor.probabilities(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, len(predictor.classes))
