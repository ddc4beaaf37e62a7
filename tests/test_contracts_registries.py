"""Contract tests over the other registries: every continual strategy and every encoder kind that
loads without a checkpoint directory, so an entry registered today is covered today (the methods'
contracts are in test_contracts.py)."""

import pytest
import torch

from continual_helpers import make_reference, make_stream
from genba.continual.protocol import ContinualSpec, run_continual
from genba.continual.strategies import make_strategy, strategy_names
from genba.encoders import encoder_kinds, load_encoder
from genba.encoders.base import ImageEncoder
from genba.errors import GenbaError
from genba.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = TrainConfig(lr=1e-2, epochs=1, batch_size=32)


@pytest.mark.parametrize("name", strategy_names())
def test_strategy_seeded_run_is_reproducible_and_unknown_settings_refused(name):
    stream, reference = make_stream(), make_reference()
    runs = [run_continual(stream, reference, ContinualSpec(method=name, settings=("xtail",), train=FAST, seed=3))
            for _ in range(2)]
    assert runs[0]["settings"]["xtail"]["accuracy_matrix"] == runs[1]["settings"]["xtail"]["accuracy_matrix"]
    with pytest.raises(GenbaError, match="unknown hyperparameter"):
        make_strategy(name, no_such_setting=1)


SELF_CONTAINED = [k for k in encoder_kinds() if k != "hf"]  # hf needs a checkpoint directory (test_encoders_hf.py)


@pytest.mark.parametrize("kind", SELF_CONTAINED)
def test_encoder_kind_contract(kind):
    from PIL import Image

    encoder = load_encoder(kind)
    assert isinstance(encoder, ImageEncoder) and encoder.provenance == load_encoder(kind).provenance
    images = [Image.new("RGB", (40, 30), (40 * i, 90, 200 - 30 * i)) for i in range(3)]
    pixels = torch.stack([encoder.preprocess(im) for im in images])
    joint, visual = encoder.encode_image_with_visual(pixels)
    assert joint.shape == (3, encoder.embed_dim) and torch.allclose(joint.norm(dim=1), torch.ones(3), atol=1e-5)
    assert visual is None or visual.shape == (3, encoder.visual_dim)
    assert torch.allclose(encoder.encode_image(pixels[1:2]), joint[1:2], atol=1e-5)  # a batch is its rows
    if encoder.has_text:
        text = encoder.encode_text(["a red car", "a photo of a cat"])
        assert text.shape == (2, encoder.embed_dim) and torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)


def _teacher_kinds():
    from genba.sak.teacher_models import ppocr_model_path
    from genba.sak.teachers import teacher_kinds

    kinds = [k for k in teacher_kinds() if k != "hf"]  # hf needs a checkpoint directory (test_sak_teachers.py)
    return [pytest.param(k, marks=pytest.mark.skipif(k == "ppocr-det" and ppocr_model_path() is None,
                                                     reason="rapidocr-onnxruntime not installed")) for k in kinds]


@pytest.mark.parametrize("kind", _teacher_kinds())
def test_teacher_kind_contract(kind):
    """Every self-contained SAK teacher: a dense map and a pooled vector of its declared width, uint8
    and float input agree, a licence and a stable provenance (the cache key)."""
    from genba.sak.teachers import load_teacher

    teacher = load_teacher(kind)
    assert teacher.licence and teacher.licence != "unknown" and teacher.provenance == load_teacher(kind).provenance
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dense, pooled = teacher(images)
    assert dense.ndim == 4 and dense.shape[:2] == (2, teacher.dim) and pooled.shape == (2, teacher.dim)
    assert torch.isfinite(dense).all() and torch.isfinite(pooled).all()
    assert torch.allclose(teacher(images.float() / 255.0)[1], pooled, atol=1e-4)
    with pytest.raises(GenbaError, match="expected images"):
        teacher(images[0])
