"""Zero-shot classification with a text classifier built from class names and templates.

For class c with name n_c and templates T:  w_c = normalize( mean_t normalize(text(t(n_c))) ),
and the logits of an image embedding q are 100 * q . w_c (CLIP's logit scale).
"""

from __future__ import annotations

import torch

from genba.cache import TensorCache
from genba.encoders.base import TextEncoder, VisionLanguageEncoder, l2_normalize
from genba.errors import GenbaError

LOGIT_SCALE = 100.0


def text_classifier(encoder: TextEncoder, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """(C, D) normalized class text vectors: template-averaged embeddings of each class name."""
    if not encoder.has_text:
        raise GenbaError(f"encoder '{encoder.name}' has no text tower: zero-shot needs a vision-language model (e.g. conse, or hf:<CLIP or SigLIP dir>)")
    if not classnames or not templates:
        raise GenbaError("zero-shot needs at least one class name and one prompt template")
    prompts = [template.format(name) for name in classnames for template in templates]
    embeddings = encoder.encode_text(prompts).float()  # (C * T, D)
    per_class = l2_normalize(embeddings).view(len(classnames), len(templates), -1)  # (C, T, D)
    return l2_normalize(per_class.mean(dim=1))  # (C, D)


def cached_text_classifier(encoder: TextEncoder, classnames: list[str], templates: list[str], cache: TensorCache | None) -> torch.Tensor:
    """`text_classifier`, stored in `cache` under (encoder provenance, names, templates)."""
    if cache is None:
        return text_classifier(encoder, classnames, templates)
    key = {"encoder": encoder.provenance, "classnames": "\n".join(classnames), "templates": "\n".join(templates)}
    return cache.get_or_compute("text", key, lambda: {"weights": text_classifier(encoder, classnames, templates)})["weights"]


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """(N, D) x (C, D) -> (N, C) logits = 100 * cos."""
    return LOGIT_SCALE * image_features @ classifier.T


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(dim=-1) == labels).float().mean().item()


def evaluate_zeroshot(encoder: VisionLanguageEncoder, dataset, split: str = "test", *, cache: TensorCache | None = None, progress: bool = True) -> dict:
    """Zero-shot top-1 of `encoder` on `dataset`'s `split`, with chance and majority levels."""
    from genba.features import extract_features

    features = extract_features(encoder, dataset, split, cache=cache, progress=progress)
    classifier = cached_text_classifier(encoder, dataset.classnames, dataset.templates, cache)
    logits = zeroshot_logits(features.image, classifier)
    num_classes = len(dataset.classnames)
    predictions = logits.argmax(-1)  # (N,)
    counts = torch.bincount(features.labels, minlength=num_classes)
    correct = torch.bincount(features.labels[predictions == features.labels], minlength=num_classes)
    per_class = (100.0 * correct / counts.clamp_min(1)).tolist()
    predicted = torch.bincount(predictions, minlength=num_classes)
    return {
        "dataset": dataset.name,
        "encoder": encoder.provenance,
        "split": split,
        "n": len(features),
        "top1": top1(logits, features.labels),
        "chance": 100.0 / len(dataset.classnames),
        "majority": 100.0 * counts.max().item() / len(features),
        "classnames": list(dataset.classnames),
        "per_class_top1": per_class,
        "balanced_accuracy": sum(r for r, n in zip(per_class, counts.tolist()) if n) / max(1, int((counts > 0).sum())),
        "predicted_count": predicted.tolist(),
    }
