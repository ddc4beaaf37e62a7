"""Dataset table, user folders / CSVs, splits, few-shot sampling and the safe unpickler."""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from genba.data import (
    DATASETS,
    CorruptImageWarning,
    UnsafePickleError,
    available_datasets,
    load_arrays,
    load_dataset,
    sample_few_shot,
    stratified_split,
    train_val_split,
)
from genba.data import user as user_mod
from genba.errors import GenbaError

# --- built-ins ------------------------------------------------------------------------------

EXPECTED = {  # name: (classes, items, image size, train size, test size)
    "textile": (3, 2000, (250, 250), 1000, 1000),
    "animal-mnist": (10, 10000, (28, 28), 5000, 5000),
    "fashion-mnist": (10, 15000, (28, 28), 5000, 10000),
    "digits": (10, 1797, (8, 8), 898, 899),
}
_AVAILABLE = {name: (ok, why) for name, ok, why in available_datasets()}
_cache: dict = {}


def builtin(name):
    ok, why = _AVAILABLE[name]
    if not ok:
        pytest.skip(f"{name}: {why}")
    if name not in _cache:
        _cache[name] = load_dataset(name)
    return _cache[name]


def test_table_lists_every_builtin():
    assert set(DATASETS) == set(EXPECTED) == set(_AVAILABLE)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads(name):
    ds = builtin(name)
    n_cls, n, size, n_train, n_test = EXPECTED[name]
    assert (ds.name, ds.num_classes, len(ds), len(ds.class_ids)) == (name, n_cls, n, n_cls)
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) == set(range(n_cls))
    train, test = ds.splits["train"], ds.splits["test"]
    assert (len(train), len(test)) == (n_train, n_test)
    assert not np.intersect1d(train, test).size
    assert np.array_equal(np.union1d(train, test), np.arange(n))
    # stratified: every class on both sides
    assert set(ds.labels[train]) == set(ds.labels[test]) == set(range(n_cls))
    assert 3 <= len(ds.templates) <= 8 and all(t.count("{}") == 1 for t in ds.templates)
    for i in (int(train[0]), int(test[-1])):
        img = ds.image(i)
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == size
    assert len(ds.fingerprint) == 16 and "\n" not in ds.source


def test_builtin_specifics():
    textile = builtin("textile")
    assert textile.class_ids == ["nominal", "local", "global"]
    assert np.bincount(textile.labels).tolist() == [1000, 500, 500]
    animals = builtin("animal-mnist")
    assert animals.classnames == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    # silhouettes: white on black, so the corner pixel is dark
    assert np.asarray(animals.image(0))[0, 0].max() < 64
    fashion = builtin("fashion-mnist")
    assert np.bincount(fashion.labels[fashion.splits["train"]]).tolist() == [500] * 10
    assert "5000" in fashion.source and "official" in fashion.source


def test_builtin_deterministic():
    a, b = builtin("digits"), load_dataset("digits")
    assert a is not b and a.fingerprint == b.fingerprint
    for k in ("train", "test"):
        assert np.array_equal(a.splits[k], b.splits[k])
    assert np.array_equal(np.asarray(a.image(5)), np.asarray(b.image(5)))


def test_unknown_name_lists_choices():
    with pytest.raises(GenbaError) as e:
        load_dataset("cifar-11")
    msg = str(e.value)
    assert all(n in msg for n in EXPECTED) and "folder:" in msg and "csv:" in msg and "\n" not in msg


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path):
    from genba.data import builtin as builtin_mod

    monkeypatch.setattr(builtin_mod, "FASHION_DIR", tmp_path / "nowhere")
    assert not dict((n, ok) for n, ok, _ in available_datasets())["fashion-mnist"]
    with pytest.raises(GenbaError, match="fashion-mnist is not installed: run `sudo apt-get install dataset-fashion-mnist`"):
        load_dataset("fashion-mnist")


# --- user folders and CSVs ------------------------------------------------------------------


def write_png(path, value, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6, 5), value).save(path)
    return path


def make_folder(root, classes=(("cat", 3), ("red_car", 4))):
    for c, (name, n) in enumerate(classes):
        for j in range(n):
            write_png(root / name / f"img{j}.png", (40 * c, 10 * j, 0))
    return root


def test_folder_dataset(tmp_path):
    root = make_folder(tmp_path / "site")
    write_png(root / "cat" / "gray.PNG", 128, mode="L")  # upper-case extension, grayscale
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    ds = load_dataset(f"folder:{root}")
    assert ds.name == f"folder:{root}"
    assert ds.classnames == ["cat", "red car"] and ds.class_ids == ["cat", "red_car"]
    assert np.bincount(ds.labels).tolist() == [4, 4]
    assert not np.intersect1d(ds.splits["train"], ds.splits["test"]).size
    assert np.bincount(ds.labels[ds.splits["train"]]).tolist() == [2, 2]
    assert all(ds.image(i).mode == "RGB" and ds.image(i).size == (6, 5) for i in range(len(ds)))
    # picklable (DataLoader workers), and a plain directory path means the same dataset
    assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(ds)).image(3)), np.asarray(ds.image(3)))
    assert load_dataset(str(root)).fingerprint == ds.fingerprint
    # content changes change the fingerprint
    write_png(root / "red_car" / "img9.png", (1, 2, 3))
    assert load_dataset(str(root)).fingerprint != ds.fingerprint


def test_csv_dataset(tmp_path):
    root = make_folder(tmp_path / "imgs")
    elsewhere = write_png(tmp_path / "other" / "x.png", (9, 9, 9))
    lines = ["path,label"] + [f"imgs/cat/img{j}.png,zebra" for j in range(3)]
    lines += [f"imgs/red_car/img{j}.png,ant" for j in range(2)] + [f"{elsewhere},ant"]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(csv_file))
    assert ds.name == f"csv:{csv_file}" and ds.classnames == ["ant", "zebra"]  # sorted labels
    assert np.bincount(ds.labels).tolist() == [3, 3] and ds.image(0).mode == "RGB"
    assert load_dataset(f"csv:{csv_file}").fingerprint == ds.fingerprint

    # a missing file is dropped with a warning naming it
    csv_file.write_text("\n".join(lines + ["imgs/cat/gone.png,zebra"]) + "\n")
    with pytest.warns(CorruptImageWarning, match="gone.png"):
        assert len(load_dataset(str(csv_file))) == 6


@pytest.mark.parametrize("header", ["file,class", "path", "path,label,extra"])
def test_csv_bad_header(tmp_path, header):
    f = tmp_path / "bad.csv"
    f.write_text(f"{header}\na.png,x\n")
    with pytest.raises(GenbaError, match="the header must be 'path,label'"):
        load_dataset(f"csv:{f}")


def one_line_error(spec, match):
    with pytest.raises(GenbaError, match=match) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_folder_errors(tmp_path):
    one_line_error(f"folder:{tmp_path / 'nope'}", "does not exist")
    a_file = write_png(tmp_path / "f.png", (0, 0, 0))
    one_line_error(f"folder:{a_file}", "is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(f"folder:{empty}", "has no class sub-folders: put the images of each class in its own sub-folder")
    loose = tmp_path / "loose"
    write_png(loose / "a.png", (0, 0, 0))
    one_line_error(str(loose), "has no class sub-folders")
    no_images = make_folder(tmp_path / "noimg")
    (no_images / "dog").mkdir()
    one_line_error(str(no_images), r"class folder '.*dog' has no images")
    single = make_folder(tmp_path / "single", classes=(("cat", 3),))
    one_line_error(str(single), "only 1 class .*at least 2 classes")
    lonely = make_folder(tmp_path / "lonely", classes=(("cat", 3), ("dog", 1)))
    one_line_error(str(lonely), "class 'dog' has only 1 image: each class needs at least 2 images")


def test_unreadable_folder(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "locked")
    if os.geteuid() == 0:  # root reads anything: simulate the permission check failing
        real_access = os.access
        monkeypatch.setattr(user_mod.os, "access", lambda p, m: False if str(p) == str(root) else real_access(p, m))
        one_line_error(str(root), "permission denied")
        return
    root.chmod(0)
    try:
        one_line_error(str(root), "permission denied")
    finally:
        root.chmod(0o755)


def test_corrupt_images_are_dropped_with_one_warning(tmp_path):
    root = make_folder(tmp_path / "mixed")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    good = (root / "red_car" / "img0.png").read_bytes()
    (root / "red_car" / "truncated.png").write_bytes(good[: len(good) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root))
    corrupt = [w for w in caught if issubclass(w.category, CorruptImageWarning)]
    assert len(corrupt) == 1
    msg = str(corrupt[0].message)
    assert "broken.jpg" in msg and "truncated.png" in msg and "2 of 9" in msg
    assert len(ds) == 7 and "2 unreadable files skipped" in ds.source


def test_undecodable_image_fails_at_read_time_with_its_name(tmp_path):
    root = make_folder(tmp_path / "late")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    data = buf.getvalue()
    (root / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])  # header verifies, data is cut
    ds = load_dataset(str(root))
    errors = []
    for i in range(len(ds)):
        try:
            ds.image(i)
        except GenbaError as e:
            errors.append(str(e))
    assert len(errors) == 1 and re.match(r"cannot decode image '.*cut.jpg'", errors[0])


def test_many_corrupt_images_listed_briefly(tmp_path):
    root = make_folder(tmp_path / "many")
    for j in range(13):
        (root / "cat" / f"bad{j:02d}.png").write_bytes(b"junk")
    with pytest.warns(CorruptImageWarning, match="and 3 more"):
        load_dataset(str(root))


def test_class_left_empty_by_corrupt_images(tmp_path):
    root = make_folder(tmp_path / "allbad")
    for j in range(2):
        (root / "dog" / f"bad{j}.jpg").parent.mkdir(exist_ok=True)
        (root / "dog" / f"bad{j}.jpg").write_bytes(b"junk")
    with pytest.warns(CorruptImageWarning):
        one_line_error(str(root), "class 'dog' has no readable images")


# --- splits and few-shot --------------------------------------------------------------------

LABELS = np.repeat(np.arange(4), [30, 20, 10, 3])  # imbalanced; class 3 is tiny


def test_stratified_split():
    a, b = stratified_split(LABELS, 0.5, seed=0)
    assert not np.intersect1d(a, b).size and len(a) + len(b) == len(LABELS)
    assert np.bincount(LABELS[a]).tolist() == [15, 10, 5, 2]
    a2, _ = stratified_split(LABELS, 0.5, seed=0)
    a3, _ = stratified_split(LABELS, 0.5, seed=1)
    assert np.array_equal(a, a2) and not np.array_equal(a, a3)


def test_train_val_split_never_touches_test():
    train, test = stratified_split(LABELS, 0.5, seed=0)
    pool, val = train_val_split(LABELS, train, val_per_class=4, seed=0)
    assert np.array_equal(np.union1d(pool, val), train)
    assert not np.intersect1d(pool, val).size and not np.intersect1d(val, test).size
    per_class_val = np.bincount(LABELS[val], minlength=4)
    assert per_class_val.tolist() == [4, 4, 4, 1]  # class 3 has 2 train items: keeps one
    assert (np.bincount(LABELS[pool], minlength=4) >= 1).all()
    pool2, val2 = train_val_split(LABELS, train, val_per_class=4, seed=0)
    assert np.array_equal(val, val2) and np.array_equal(pool, pool2)


def test_train_val_split_on_dataset():
    ds = builtin("digits")
    pool, val = train_val_split(ds, val_per_class=5, seed=3)
    assert np.array_equal(np.union1d(pool, val), ds.splits["train"])
    assert not np.intersect1d(val, ds.splits["test"]).size
    assert np.bincount(ds.labels[val]).tolist() == [5] * 10


def test_few_shot_sampling():
    ds = builtin("digits")
    pool, val = train_val_split(ds, val_per_class=5, seed=0)
    shots = sample_few_shot(ds, pool, shots=4, seed=0)
    assert np.bincount(ds.labels[shots]).tolist() == [4] * 10
    assert np.isin(shots, pool).all()
    assert not np.intersect1d(shots, val).size and not np.intersect1d(shots, ds.splits["test"]).size
    assert np.array_equal(shots, sample_few_shot(ds, pool, shots=4, seed=0))
    assert not np.array_equal(shots, sample_few_shot(ds, pool, shots=4, seed=1))
    assert np.isin(shots, sample_few_shot(ds, pool, shots=8, seed=0)).all()  # nested in K


def test_few_shot_too_many_shots():
    train, _ = stratified_split(LABELS, 0.5, seed=0)
    names = ["a", "b", "c", "tiny"]
    with pytest.raises(GenbaError, match="class 'tiny' has only 2 images in the training pool; use --shots 2 or fewer"):
        sample_few_shot(LABELS, train, shots=3, seed=0, classnames=names)
    with pytest.raises(GenbaError, match="class '3' has only 2 images"):
        sample_few_shot(LABELS, train, shots=3, seed=0)
    with pytest.raises(GenbaError, match="at least 1"):
        sample_few_shot(LABELS, train, shots=0, seed=0)
    assert len(sample_few_shot(LABELS, train, shots=2, seed=0)) == 8


# --- safe unpickling ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_pickle_loads_arrays(protocol):
    obj = [np.arange(12, dtype=np.uint8).reshape(3, 4), np.float32(1.5), np.array([1, 2], dtype=">i8")]
    out = load_arrays(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    assert np.array_equal(out[0], obj[0]) and out[1] == obj[1] and out[2].tolist() == [1, 2]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"x": np.zeros(2), "y": _Evil(marker)})
    with pytest.raises(UnsafePickleError, match="system"):
        load_arrays(io.BytesIO(payload))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_arrays(io.BytesIO(pickle.dumps(eval)))
