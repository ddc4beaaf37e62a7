"""`genba adapt` end to end on a tiny folder with the tiny VLM: JSON contract and bad input."""

from __future__ import annotations

import json

import pytest

from conftest import make_color_folder
from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache
from genba.cli import main
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.errors import GenbaError


@pytest.fixture
def folder(tmp_path):
    return make_color_folder(tmp_path / "colors", per_class=12)


def test_adapt_json_contract(tmp_path, folder, capsys):
    out = tmp_path / "r.json"
    code = main(["adapt", "--dataset", str(folder), "--encoder", "tiny", "--method", "dmn-tf", "--shots", "2", "--seed", "1",
                 "--val-per-class", "2", "--json", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"dataset", "encoder", "method", "shots", "seed", "n", "top1", "hyperparameters", "selected_on"} <= set(result)
    assert (result["method"], result["shots"], result["seed"], result["selected_on"]) == ("dmn-tf", 2, 1, "val")
    assert result["n"] == 18 and 0 <= result["top1"] <= 100
    assert "dmn-tf" in capsys.readouterr().out


def test_adapt_several_methods_side_by_side(tmp_path, folder, capsys):
    code = main(["adapt", "--dataset", str(folder), "--encoder", "tiny", "--method", "zeroshot,tip-adapter,dmn",
                 "--shots", "2", "--val-per-class", "2", "--select", "fixed", "--cache-dir", str(tmp_path / "c"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and all(m in out for m in ("| zeroshot", "| tip-adapter", "| dmn"))


def test_selection_never_sees_test(tmp_path, folder):
    """The chosen hyperparameters depend on train (val + shots) only: relabelling test changes nothing."""
    encoder, dataset = load_encoder("tiny"), load_dataset(str(folder))
    data = prepare(encoder, dataset, cache=TensorCache(tmp_path / "c"), progress=False)
    spec = AdaptSpec(method="tip-adapter", shots=2, val_per_class=2)
    first = run_adapt(encoder, dataset, spec, data=data)
    data.test.labels = (data.test.labels + 1) % 3
    second = run_adapt(encoder, dataset, spec, data=data)
    assert first["hyperparameters"] == second["hyperparameters"]
    assert first["selection_table"] == second["selection_table"]


def error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genba: error: ")
    return err[0]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "dmn-xl"], ["unknown method", "dmn-tf"]),
        (["--method", "tip-adapter", "--set", "gamma=3"], ["unknown hyperparameter", "gamma", "alpha"]),
        (["--method", "tip-adapter", "--set", "alpha"], ["key=value"]),
        (["--method", "tip-adapter", "--shots", "50"], ["more than", "train split", "--shots 4", "--shots all"]),
        (["--method", "tip-adapter", "--shots", "0"], ["needs labeled shots"]),
    ],
)
def test_adapt_bad_input(tmp_path, folder, capsys, extra, words):
    message = error_line(capsys, ["adapt", "--dataset", str(folder), "--encoder", "tiny", "--val-per-class", "2",
                                  "--cache-dir", str(tmp_path / "c"), "--quiet", *extra])
    assert all(w in message for w in words), message


def test_spec_validation_is_first():
    with pytest.raises(GenbaError, match="cache space"):
        AdaptSpec(method="dmn-tf", space="pixels").validate()


def test_views_are_deterministic_and_streamed(tmp_path, folder):
    from genba.data.views import augmented_view

    dataset = load_dataset(str(folder))
    image = dataset.image(0)
    assert augmented_view(image, 0) is image
    a, b = augmented_view(image, 3), augmented_view(image, 3)
    assert a.size == image.size and a.tobytes() == b.tobytes()
    encoder, cache = load_encoder("tiny"), TensorCache(tmp_path / "c")
    result = run_adapt(encoder, dataset, AdaptSpec(method="dmn-zs", shots=0, views=4, select="fixed", val_per_class=2), cache=cache, progress=False)
    assert result["views"] == 4 and result["n"] == len(dataset.splits["test"])
    assert len(list((tmp_path / "c").rglob("*.safetensors"))) >= 5  # train, test, 3 augmented test views (+ text)


def test_views_of_a_test_subset_encode_only_that_subset(tmp_path, folder):
    encoder, dataset, cache = load_encoder("tiny"), load_dataset(str(folder)), TensorCache(tmp_path / "c")
    data = prepare(encoder, dataset, cache=cache, progress=False)
    data.test = data.test.subset([0, 2, 5])
    result = run_adapt(encoder, dataset, AdaptSpec(method="tda", shots=0, views=2, select="fixed", val_per_class=2),
                       data=data, cache=cache, progress=False)
    assert result["n"] == 3
    from safetensors import safe_open

    sizes = []
    for path in (tmp_path / "c" / "features").glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            sizes.append(handle.get_slice("labels").get_shape()[0])
    assert 3 in sizes  # the augmented view was extracted for the 3 images only


def test_set_pairs_are_typed_the_same_for_every_sub_command():
    from genba.settings import parse_set_pairs

    assert parse_set_pairs(["alpha=100", "train.lr=1e-3", "mem.count_weight=true", "memory=false", "policy=herding",
                            "b=-2"]) == {"alpha": 100, "train.lr": 1e-3, "mem.count_weight": True, "memory": False,
                                         "policy": "herding", "b": -2}


def test_calibration_cost_ood_and_support_views(tmp_path, folder):
    """Every result carries ECE and the cost per image; an OOD set adds the MSP AUROC; the support can be
    augmented views (Tip-Adapter's cache of augment_epoch views), encoded once for a nested pool."""
    encoder, dataset, cache = load_encoder("tiny"), load_dataset(str(folder)), TensorCache(tmp_path / "c")
    data = prepare(encoder, dataset, cache=cache, progress=False)
    plain = run_adapt(encoder, dataset, AdaptSpec(method="tip-adapter", shots=2, val_per_class=2, select="fixed"), data=data)
    assert 0 <= plain["ece"] <= 100 and plain["ood_auroc"] is None
    assert plain["encoder_ms_per_image"] > 0 and plain["method_ms_per_image"] >= 0 and plain["fit_seconds"] >= 0
    data.ood = data.train.subset([0, 1, 2, 3])  # any other images of the same encoder stand in for an OOD set
    with_ood = run_adapt(encoder, dataset, AdaptSpec(method="tip-adapter", shots=2, val_per_class=2, select="fixed"), data=data)
    assert 0 <= with_ood["ood_auroc"] <= 100 and with_ood["top1"] == plain["top1"]  # the OOD stream changes no column
    views = run_adapt(encoder, dataset, AdaptSpec(method="tip-adapter-f", shots=2, val_per_class=2, support_views=3,
                                                  overrides={"train.epochs": 2}), data=data, cache=cache, progress=False)
    assert views["support_views"] == 3 and {"alpha", "beta", "init_alpha"} <= set(views["hyperparameters"])
    assert views["searched_on_val"] and not plain["searched_on_val"]
    with pytest.raises(GenbaError, match="support views"):
        AdaptSpec(method="tip-adapter-f", support_views=0).validate()
