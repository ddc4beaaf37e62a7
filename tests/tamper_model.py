"""The `model` artefact kind for the tamper matrix (tests/test_tamper.py on the integrity branch):
add `"model": make_model` to its MAKERS, MODEL_ACCEPTED to its ACCEPTED and
MODEL_ACCEPTED_PREFIXES to its ACCEPTED_PREFIXES.

The real writer (`genba adapt --out`, tiny encoder) and the real reader (load_model + the kind's
predictor, as `genba predict` opens a model). The fields listed below are records kept for people
(how a setting was chosen, the command, the data ids, the metrics reached): never used to compute."""

from __future__ import annotations

# forged values valid for their field: any seed; a model with one prompt template fewer (two remain)
MODEL_ACCEPTED = {("model", "state.seed", "10**9"), ("model", "state.templates[0]", "missing")}
MODEL_ACCEPTED_PREFIXES = {("model", "command"), ("model", "created"), ("model", "genba_version"), ("model", "chosen"),
                           ("model", "data"), ("model", "metrics"), ("model", "parent"), ("model", "version")}


def make_model(tmp):
    from genba.cli import main
    from genba.model import load
    from genba.model.base import open_predictor
    from model_helpers import pattern_folder

    site = pattern_folder(tmp / "site", per_class=6)
    path = tmp / "m.genba"
    assert main(["adapt", "--dataset", f"folder:{site}", "--method", "tip-adapter", "--encoder", "tiny", "--shots", "2",
                 "--select", "fixed", "--out", str(path), "--quiet", "--no-cache"]) == 0
    return path, lambda p: open_predictor(load(p))
