"""What a continual run reads, checked and loaded before anything trains: the typed request a CLI
or a bench script builds, turned into (stream, reference) for genba.continual.protocol.

    inputs = StreamInputs(stream="textile,fashion-mnist,digits", encoder="conse", seed=0)
    stream, reference = load_inputs(inputs, spec, cache)    # spec.trunk / spec.lora set and checked

Order of checks (each a GenbaError before any file is written): the method and settings
(spec.validate), the trunk spec, the stream grammar and its length, the control task, the
encoder (LoRA needs an hf: CLIP one); then features are extracted (cached) and the reference
set loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from genba.errors import GenbaError


@dataclass
class StreamInputs:
    stream: str
    """Comma-separated tasks (genba.continual.stream grammar)."""
    encoder: str = "conse"
    control: str | None = None
    """None: the first built-in dataset not in the stream; "none": no control task."""
    seed: int = 0
    val_per_class: int = 16
    max_train_per_class: int | None = None
    max_test_per_class: int | None = None
    trunk: str | None = None
    """BACKBONE:STAGE: train the trunk's stages after STAGE too (variant b)."""
    trunk_size: int = 224
    lora: int | None = None
    """LoRA rank on an hf: CLIP image tower (variant c)."""
    progress: bool = False


def default_control(stream_datasets: set[str]) -> str | None:
    """The first available built-in dataset that is not in the stream."""
    from genba.data.builtin import DATASETS

    for name, entry in DATASETS.items():
        if name not in stream_datasets and entry.check()[0]:
            return name
    return None


def parse_trunk(text: str, size: int) -> tuple:
    """'efficientnet-lite0:block14' -> (backbone, stage, size); GenbaError naming the cut points."""
    from genba.encoders import load_backbone

    name, sep, stage = text.partition(":")
    if not sep or not stage:
        raise GenbaError(f"--trunk takes BACKBONE:STAGE (e.g. efficientnet-lite0:block14), got '{text}'")
    backbone = load_backbone(name)
    backbone.stage_index(stage, 0)  # unknown stage -> GenbaError listing the cut points
    return backbone, stage, size


def load_inputs(inputs: StreamInputs, spec, cache, *, encoder=None, datasets: dict | None = None):
    """(stream, reference) for `spec` (a ContinualSpec; its trunk / lora are set from `inputs`).
    `encoder` and `datasets` may be passed in to reuse loaded ones across runs."""
    from genba.continual.reference import load_reference
    from genba.continual.stream import build_stream, parse_stream
    from genba.data import load_dataset
    from genba.encoders import load_encoder

    spec.validate()  # unknown method / hyperparameter / setting: before any data is read
    trunk = None
    if inputs.trunk:
        trunk = parse_trunk(inputs.trunk, inputs.trunk_size)
        spec.trunk = trunk
    datasets = {} if datasets is None else datasets

    def num_classes(name: str) -> int:
        datasets.setdefault(name, load_dataset(name))
        return datasets[name].num_classes

    specs = parse_stream(inputs.stream, num_classes)
    if len(specs) < 2:
        raise GenbaError(f"the stream '{inputs.stream}' has one task: Transfer, BWT, FWT and Forgetting need at "
                         "least two; add tasks, or split it (e.g. name#5)")
    control_name = inputs.control if inputs.control is not None else default_control({s.dataset for s in specs})
    control = None if control_name in (None, "none") else parse_stream(control_name, num_classes)
    if control is not None and len(control) != 1:
        raise GenbaError(f"--control takes one task, got '{control_name}'")
    encoder = encoder if encoder is not None else load_encoder(inputs.encoder)
    if inputs.lora is not None:
        if inputs.lora < 1 or inputs.trunk:
            raise GenbaError("--lora takes a rank >= 1 and does not combine with --trunk")
        if getattr(encoder, "model_type", None) != "clip":
            raise GenbaError(f"--lora needs an hf: CLIP encoder (--encoder hf:<clip dir>), not '{inputs.encoder}'")
        spec.lora = (encoder, inputs.lora)
        spec.validate()
    stream = build_stream(specs, encoder, cache, seed=inputs.seed, control=None if control is None else control[0],
                          val_per_class=inputs.val_per_class, max_train_per_class=inputs.max_train_per_class,
                          max_test_per_class=inputs.max_test_per_class, progress=inputs.progress, datasets=datasets,
                          trunk=trunk, pixels=encoder if inputs.lora else None)
    reference = load_reference(encoder, cache, progress=inputs.progress, trunk=trunk, pixels=bool(inputs.lora))
    return stream, reference
