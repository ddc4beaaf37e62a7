"""genba.device: one resolved Hardware flows from --device/--precision to the engine, the encoders,
feature extraction and the memory; results come back on the CPU as float32; bad devices are one
clear line (exit 2). On this CPU machine the device is the CPU: the tests check that the resolved
Hardware is the one every part uses (a spy records where pixels and batches are sent and which
autocast runs), and that reduced precision trains fp32 master weights."""

import pytest
import torch
from PIL import Image

from genba.cli import main
from genba.device import CPU, Hardware, current, resolve, to_device, use
from genba.encoders import encoder_kinds, load_encoder
from genba.errors import GenbaError
from genba.features import encode_images, feature_key
from genba.train import Objective, TensorData, TrainConfig, fit


class Spy(Hardware):
    """A CPU Hardware that records what is moved through it and how often autocast is entered."""

    def __init__(self, precision="fp32"):
        super().__init__(torch.device("cpu"), precision)
        object.__setattr__(self, "log", {"to": 0, "autocast": 0})

    def to(self, obj):
        self.log["to"] += 1
        return super().to(obj)

    def autocast(self):
        self.log["autocast"] += 1
        return super().autocast()


def test_resolve_names_and_clear_errors():
    assert resolve("cpu", "fp32") == CPU
    assert resolve("auto").device.type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve("cpu", "bf16").dtype == torch.bfloat16
    for device, precision in (("tpu", "fp32"), ("cpu", "fp8"), ("cpu", "fp16"), ("cuda:x", "fp32")):
        with pytest.raises(GenbaError):
            resolve(device, precision)
    if not torch.cuda.is_available():
        with pytest.raises(GenbaError, match="no CUDA GPU"):
            resolve("cuda:1")


def test_current_follows_use_and_resets():
    assert current() == CPU
    with use(Hardware(torch.device("cpu"), "bf16")) as hw:
        assert current() is hw
    assert current() == CPU


def test_to_device_walks_containers():
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), 3), "names": ["a"]}
    moved = to_device(batch, "cpu")
    assert moved["x"] is batch["x"] and moved["pair"][1] == 3 and moved["names"] == ["a"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cli_device_option_on_every_command_and_a_bad_device_is_exit_2(capsys):
    code = main(["zeroshot", "--dataset", "folder:/nonexistent", "--encoder", "tiny", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("genba: error: --device cuda: no CUDA GPU") and err.count("\n") == 1
    for command in (["adapt"], ["continual"], ["cvm", "train"], ["movit", "train"], ["sak", "distill"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        help_text = capsys.readouterr().out
        assert "--device" in help_text and "--precision" in help_text, command


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_encoders_compute_on_their_hardware_and_return_cpu_float32(precision, tmp_path):
    """Every registered image encoder that runs offline here: pixels go through encoder.hardware
    (set by `on`, else by `use`), the pass runs under its autocast, rows come back CPU float32."""
    assert {"tiny", "conse", "hf"} <= set(encoder_kinds())
    encoders = [load_encoder("tiny"), _tiny_clip(tmp_path)]
    image = Image.new("RGB", (40, 30), (200, 40, 10))
    conse = load_encoder("conse")  # its image tower only: the joint space needs MiniLM (slow to load here)
    spy = Spy(precision)
    with use(spy):
        visual, logits = conse.visual_and_logits(torch.stack([conse.preprocess(image)]))
    assert spy.log["to"] >= 1 and spy.log["autocast"] >= 1
    assert visual.device.type == logits.device.type == "cpu" and visual.dtype == logits.dtype == torch.float32
    for encoder in encoders:
        spy = Spy(precision)
        with use(spy):
            assert encoder.hardware is spy
            joint, visual = encode_images(encoder, [image, image])
        assert spy.log["to"] >= 1 and spy.log["autocast"] >= 1, encoder.name
        assert joint.device.type == "cpu" and joint.dtype == torch.float32
        assert visual is None or (visual.device.type == "cpu" and visual.dtype == torch.float32)
        pinned = Spy(precision)
        encoder.on(pinned)
        with use(CPU):
            encode_images(encoder, [image])
        assert pinned.log["autocast"] >= 1, encoder.name  # `on` wins over the ambient hardware
        encoder.on(None)


def _tiny_clip(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from genba.encoders.hf import HFImageEncoder
    from genba.encoders.hf_preprocess import build_image_transform

    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=8,
                  image_size=16)
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=100)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=8)).eval()
    return HFImageEncoder(tmp_path, "clip", model, None, build_image_transform(None, "clip", 16), "test:clip", 8, 16, 77,
                          False)


def test_reduced_precision_enters_the_feature_key_and_fp32_keeps_it_unchanged():
    from genba.data.table import Dataset

    encoder = load_encoder("tiny")
    import numpy as np

    dataset = Dataset(name="d", classnames=["a"], templates=["{}"], labels=np.zeros(2, dtype=np.int64),
                      splits={"train": np.array([0]), "test": np.array([1])}, fingerprint="f", source="",
                      _load=lambda i: None)
    plain = feature_key(encoder, dataset, "test", None)
    assert set(plain) == {"version", "encoder", "dataset", "fingerprint", "split", "transform"}
    with use(Hardware(torch.device("cpu"), "bf16")):
        assert feature_key(encoder, dataset, "test", None) == {**plain, "precision": "bf16"}


class Linear(Objective):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, batch):
        return torch.nn.functional.cross_entropy(self.lin(batch["x"]), batch["y"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_engine_trains_fp32_master_weights_under_autocast(precision, one_thread):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    objective = Linear()
    before = objective.lin.weight.detach().clone()
    spy = Spy(precision)  # fp16 on the CPU only to run the GradScaler path here (resolve refuses it)
    result = fit(objective, TensorData(x=x, y=y), TrainConfig(lr=1e-2, epochs=2, batch_size=16, clip_norm=1.0),
                 progress=False, hardware=spy)
    assert result.steps == 8 and spy.log["to"] == 8 and spy.log["autocast"] >= 8
    assert objective.lin.weight.dtype == torch.float32 and not torch.equal(objective.lin.weight, before)
    assert objective.lin.weight.device.type == "cpu"


def test_memory_reads_follow_their_tensors():
    from genba.memory import DynamicMemory

    memory = DynamicMemory(3, 2, 8, dtype="float16", device="cpu")
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    memory.write_batch(x, [0, 1, 2, 0], [0.1, 0.2, 0.3, 0.4])
    assert memory.device.type == "cpu" and memory.read(x).device == memory.device
