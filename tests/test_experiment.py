"""genba.experiment: Summary tables (known means), ResultLog merging and crash progress, figures."""

from __future__ import annotations

import json
import math

import pytest

from genba.errors import GenbaError
from genba.experiment import ResultLog, ResultWriter, RunRecord, Summary, per_seed, select


def rec(dataset, method, seed, top1, shots=0, **extra):
    return RunRecord(dataset=dataset, method=method, seed=seed, top1=top1, shots=shots, extra=extra)


def summary(records, datasets=("a", "b"), methods=("m",), shots=(1,), metric="top1", **kw):
    return Summary(lambda ds, m, k: per_seed(select(records, dataset=ds, method=m, shots=k), metric),
                   list(datasets), list(methods), list(shots), **kw)


def test_mean_over_datasets_is_taken_per_seed_then_mean_std():
    # a: seeds 10, 20; b: seeds 30, 50 -> per-seed means 20, 35 -> 27.5 ± 7.5 (not the spread of the four runs)
    records = [rec("a", "m", 0, 10.0, 1), rec("a", "m", 1, 20.0, 1), rec("b", "m", 0, 30.0, 1), rec("b", "m", 1, 50.0, 1)]
    s = summary(records)
    s.add_mean("mean", ["a", "b"])
    assert s.values("mean", "m", 1) == {0: 20.0, 1: 35.0}
    assert "| m | 27.5 ± 7.5 |" in s.markdown("mean", ["1-shot"])
    assert "| m | 15.0 ± 5.0 |" in s.markdown("a", ["1-shot"])
    assert s.curve("mean", "m") == [27.5]
    text = s.sections(["1-shot"])
    assert text.startswith("### a\n\n| method | 1-shot |") and "### mean\n\n" in text


def test_a_missing_cell_is_na_and_drops_the_group_from_complete():
    records = [rec("a", "m", 0, 10.0, 1), rec("a", "n", 0, 20.0, 1), rec("b", "m", 0, 30.0, 1)]  # n never ran on b
    s = summary(records, methods=("m", "n"))
    assert s.complete() == ["a"]
    s.add_mean("mean", ["a", "b"])
    assert "| n | n/a |" in s.markdown("mean", ["1-shot"]) and "| m | 20.0 |" in s.markdown("mean", ["1-shot"])
    assert math.isnan(s.curve("mean", "n")[0])


def test_a_run_without_the_metric_is_na():
    records = [rec("a", "m", 0, 10.0, 1, balanced_accuracy=12.0), rec("a", "m", 1, 20.0, 1)]
    s = summary(records, datasets=("a",), metric="balanced_accuracy")
    assert s.values("a", "m", 1) == {0: 12.0, 1: None}
    assert "| m | n/a |" in s.markdown("a", ["1-shot"])


def test_several_runs_per_seed_are_averaged_and_pooled_over_groups():
    # shift-style: per seed, a dataset's cell averages its corruptions; the mean over datasets pools them all
    records = [rec("a", "m", 0, v, 1, corruption=c) for v, c in ((10.0, "x"), (20.0, "y"))]
    records += [rec("b", "m", 0, v, 1, corruption=c) for v, c in ((30.0, "x"), (60.0, "y"), (90.0, "z"))]
    s = summary(records)
    s.add_mean("mean", ["a", "b"])
    assert s.values("a", "m", 1) == {0: 15.0}
    assert s.values("mean", "m", 1) == {0: 42.0}  # (10 + 20 + 30 + 60 + 90) / 5
    assert "| m | 42.0 |" in s.markdown("mean", ["1-shot"])  # one seed: no ± part


def _writer(tmp_path, command):
    return ResultWriter("res", tmp_path, command=command)


def test_merge_keeps_other_rows_replaces_the_rerun_and_appends_the_command(tmp_path):
    first = ResultLog(_writer(tmp_path, "python bench/x.py"))
    first.add([rec("a", "old", 0, 1.0), rec("a", "rerun", 0, 2.0), rec("b", "rerun", 0, 3.0)])
    first.finish()
    rerun = ResultLog(_writer(tmp_path, "python bench/x.py --methods rerun --datasets a --merge"),
                      keep=lambda r: not (r.method == "rerun" and r.dataset == "a"))
    rerun.add([rec("a", "rerun", 0, 9.0)])
    rerun.finish()
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["command"] == "python bench/x.py --methods rerun --datasets a --merge"
    assert saved["commands"] == ["python bench/x.py", "python bench/x.py --methods rerun --datasets a --merge"]
    assert len(saved["seconds"]) == 2 and all(isinstance(t, int) for t in saved["seconds"])
    rows = {(r["dataset"], r["method"]): r["top1"] for r in saved["rows"]}
    assert rows == {("a", "old"): 1.0, ("b", "rerun"): 3.0, ("a", "rerun"): 9.0}
    fresh = ResultLog(_writer(tmp_path, "python bench/x.py"))  # no keep: the file starts over
    assert fresh.rows == [] and fresh.commands == ["python bench/x.py"]


def test_a_crash_mid_run_leaves_the_progress(tmp_path):
    log = ResultLog(_writer(tmp_path, "python bench/x.py"))
    with pytest.raises(RuntimeError):
        for dataset in ("a", "b"):
            if dataset == "b":
                raise RuntimeError("killed while running b")
            log.add([rec(dataset, "m", 0, 5.0)])
        log.finish()
    read = ResultLog.read(_writer(tmp_path, "python bench/x.py --tables-only"))
    assert [(r.dataset, r.top1) for r in read.rows] == [("a", 5.0)]
    assert read.seconds == [None]  # the crashed command's time was never recorded
    assert read.writer.command == "python bench/x.py"  # tables name the command that ran


def test_an_old_file_and_raw_rows_read_back(tmp_path):
    raw = {"dataset": "a", "method": "m", "seed": 1, "top1": 50.0, "shots": 4, "n": 10}
    (tmp_path / "res.json").write_text(json.dumps({"command": "python bench/x.py", "rows": [raw]}))
    log = ResultLog.read(_writer(tmp_path, "ignored"))
    assert log.commands == ["python bench/x.py"] and log.seconds == [None]
    assert log.rows[0].shots == 4 and log.rows[0].get("n") == 10 and log.rows[0].get("absent") is None


def test_reading_a_missing_file_names_the_fix(tmp_path):
    with pytest.raises(GenbaError, match="without --tables-only"):
        ResultLog.read(_writer(tmp_path, "python bench/x.py"))


def test_line_panels_save_a_png_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from genba.report import line_panels

    fig = line_panels({"p": {"m": [1.0, 2.0]}, "q": {"m": [3.0, float("nan")]}}, [1, 2], xlabel="x", ylabel="y",
                      styles={"m": {"linestyle": "--"}}, log2_x=True)
    assert [ax.get_title() for ax in fig.axes] == ["p", "q"] and fig.axes[0].get_lines()[0].get_linestyle() == "--"
    path = _writer(tmp_path, "c").figure(fig, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.png"]
