"""Models and served memories (genba.store, served by `genba serve`) are one thing in two places.

    memory_id, token = put_model(store, model, name="line 3")     # an adapt model -> a served memory
    model = get_model(store, memory_id)                           # a served memory -> a model file's content
    report = fill_from_folder(store, memory_id, "folder:/data/site")  # a labelled folder -> support

A memory holds the encoder's joint features (genba.store), so an adapt model in the joint space
goes in as it is: its support rows become the memory's labelled (static) entries, with source ids
"<dataset>#<index>" that `delete-source` erases; its method's learned tensors are recomputed (and
then cached) by the store's own rule. A model of another kind or space is refused in one line
(a CVM student or a MoViT has no memory to serve; a visual-space cache would need other features).
Filling from a folder encodes every image of it and adds it as support, one all-or-nothing write
per batch, the source id of each image being its path relative to the folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genba.errors import GenbaError
from genba.model.base import Model

SOURCE_BATCH = 64


def _flat_hyperparameters(hp: dict) -> dict:
    """The store's flat key -> scalar form (a trained method's `train` block as train.* keys)."""
    out = {}
    for key, value in hp.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, (bool, int, float, str))})
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def put_model(store, model: Model, *, name: str = "", token_hash: str | None = None) -> str:
    """Create a served memory equal to an adapt model (joint space); returns the memory id."""
    from genba.live import LiveMemory, create_memory
    from genba.model.kinds.adapt import load_checked_encoder

    if not model.kind.startswith("adapt:"):
        raise GenbaError(f"a {model.kind!r} model has no memory to serve (genba serve holds adapt-method memories); "
                         "serve an adapt model, or use `genba predict --model` for this one")
    if model.meta["state"]["space"] != "joint":
        raise GenbaError("this model keeps its cache in the encoder's visual features, but a served memory holds the "
                         "joint features: adapt it with --space joint to serve it")
    encoder = load_checked_encoder(model.meta["encoder"])
    hp = _flat_hyperparameters(model.meta["hyperparameters"])
    memory_id = create_memory(store, encoder, model.meta["encoder"]["spec"], model.classes,
                              model.meta["state"].get("templates") or ["a photo of a {}."], model.meta["method"], hp,
                              token_hash=token_hash, name=name or f"model {model.path.name if model.path else ''}")
    t = model.tensors
    if "support/joint" in t:
        source = model.meta["data"]["sources"][0]
        ids = source.get("support_ids") or list(range(len(t["support/labels"])))
        sources = [f"{source.get('dataset', 'model')}#{i}" for i in ids]
        joint = t["support/joint"].float()
        joint = joint[:, 0] if joint.dim() == 3 else joint
        LiveMemory(store, memory_id, encoder=encoder).add_support(joint, t["support/labels"].tolist(), sources)
    return memory_id


def get_model(store, memory_id: str) -> Model:
    """A served memory as an adapt model (joint space): its labelled entries are the support; test-time
    entries stay in the store (the model is the memory right after its support)."""
    from genba.live import build_method, static_rows
    from genba.model.kinds.adapt import kind_name

    _, spec, text, state, entries = store.load(memory_id)
    rows = static_rows(entries)
    method = build_method(spec, text, state, entries)
    tensors: dict[str, torch.Tensor] = {}
    if spec.has_text:
        tensors["text"] = torch.from_numpy(np.asarray(text, dtype=np.float32))
    if rows:
        tensors["support/joint"] = torch.from_numpy(entries.feats[rows]).float()
        tensors["support/labels"] = torch.from_numpy(entries.classes[rows]).long()
    if method is not None:
        tensors.update({f"learned/{k}": v for k, v in method.state_dict().items()})
    hp = method.hyperparameters() if method is not None else dict(spec.hyperparameters)
    return Model.create(
        kind_name(spec.method), classes=list(spec.classnames), tensors=tensors,
        encoder={"spec": spec.encoder, "provenance": spec.encoder_provenance}, method=spec.method, hyperparameters=hp,
        chosen={k: "set on the served memory" for k in spec.hyperparameters},
        data={"sources": [{"memory": memory_id, "memory_name": spec.name,
                           "support_source_ids": [entries.sources[i] for i in rows]}]},
        metrics={}, state={"space": "joint", "shots": None, "seed": 0, "val_per_class": 0,
                           "num_classes": spec.num_classes, "templates": list(spec.templates)})


def fill_from_folder(store, memory_id: str, dataset: str, *, progress: bool = False) -> dict:
    """Add every image of a labelled folder (folder:<dir> or csv:<file>) to a memory as support."""
    from tqdm.auto import tqdm

    from genba.data import load_dataset
    from genba.encoders import load_encoder
    from genba.features import encode_images
    from genba.live import LiveMemory

    data = load_dataset(dataset)
    spec = store.spec(memory_id)
    unknown = [c for c in data.classnames if c not in spec.classnames]
    if unknown:
        raise GenbaError(f"the folder's classes {unknown} are not classes of memory {memory_id} "
                         f"({', '.join(spec.classnames)}): rename those sub-folders, or create a memory with them")
    encoder = load_encoder(spec.encoder)
    live = LiveMemory(store, memory_id, encoder=encoder)
    root = Path(data.name.split(":", 1)[1])
    paths = getattr(data._load, "paths", None)
    added, per_class = 0, {c: 0 for c in data.classnames}
    bar = tqdm(total=len(data), desc=f"support {memory_id}", unit="img", disable=not progress, leave=False)
    for start in range(0, len(data), SOURCE_BATCH):
        idx = range(start, min(start + SOURCE_BATCH, len(data)))
        joint, _ = encode_images(encoder, (data.image(i) for i in idx))
        labels = [spec.classnames.index(data.classnames[int(data.labels[i])]) for i in idx]
        sources = [(Path(paths[i]).relative_to(root).as_posix() if paths is not None and root.is_dir()
                    else f"{data.name}#{i}") for i in idx]
        live.add_support(joint, labels, sources)
        added += len(labels)
        for i in idx:
            per_class[data.classnames[int(data.labels[i])]] += 1
        bar.update(len(labels))
    bar.close()
    return {"memory": memory_id, "added": added, "per_class": per_class, "version": store.version(memory_id)}
