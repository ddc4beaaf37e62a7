"""bench/gpu.py --dry-run: every section of the GPU check runs on the CPU at tiny sizes and
records its figures (not an error) in gpu.json, so the script cannot rot before a GPU runs it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"


def load_gpu_bench():
    spec = importlib.util.spec_from_file_location("genba_gpu_bench", BENCH / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sections", [["environment", "extraction", "memory", "continual", "sak"], ["ddp"]],
                         ids=["in-process", "torchrun"])
def test_dry_run_measures_every_section(tmp_path, sections, one_thread):
    bench = load_gpu_bench()
    assert bench.main(["--dry-run", "--out", str(tmp_path), "--sections", *sections]) == 0
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["dry_run"] and set(record["sections"]) == set(sections)
    failed = {name: block.get("error") for name, block in record["sections"].items() if "error" in block}
    assert not failed, failed
    got = record["sections"]
    if "extraction" in got:
        rows = got["extraction"]["rows"]
        assert {(r["precision"], r["batch"]) for r in rows} >= {("fp32", 4), ("fp32", 8), ("bf16", 4), ("bf16", 8)}
        assert all("error" not in r and r["images_per_s"] > 0 and r["output_device"] == "cpu" for r in rows)
        memory = got["memory"]["rows"]
        assert {(r["D"], r["dtype"]) for r in memory} == {(16, "float16"), (16, "int8"), (24, "float16"), (24, "int8")}
        assert all(r["b1"]["read_ms_per_query"] > 0 and r["stream_ms"] > 0 for r in memory)
        runs = {k: v for k, v in got["continual"].items() if isinstance(v, dict)}
        assert set(runs) == {f"{m}/cpu/{p}" for m in ("finetune", "ewc") for p in ("fp32", "bf16")}
        assert all(r["exit"] == 0 and len(r["accuracy_matrix"]) == 3 for r in runs.values())
        assert got["sak"]["fp32"]["steps"] > 0 and got["sak"]["bf16"]["model_device_after"] == "cpu"
        assert "# GPU check (DRY RUN" in (tmp_path / "gpu.md").read_text()
    else:
        ddp = got["ddp"]
        assert ddp["exit"] == 0, ddp.get("stderr_tail")
        assert ddp["backend"] == "gloo" and ddp["ddp"] == "DistributedDataParallel"
        assert ddp["max_abs_diff"] < 1e-5  # one rank: the DDP fit equals the plain fit


def test_committed_gpu_report_is_a_run_or_says_there_is_none():
    text = (BENCH / "results" / "gpu.md").read_text()
    assert "no GPU run exists yet" in text or (BENCH / "results" / "gpu.json").exists()
