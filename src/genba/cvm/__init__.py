"""Continual Visual Mapping (CVM; Rebillard et al., arXiv 2407.08279, Neurocomputing 2025).

A small visual model f is trained continually to map images into the fixed concept space of a
frozen language model: the text embeddings t_c of class names (x prompt templates), computed
once and stored with the model (the concept bank). Logits are s * cos(f(x), t_c); a new class
costs one text embedding (a row of the bank), with or without images.

    concepts.py   the concept bank (safetensors + provenance, atomic; add a class = add a row)
    pixels.py     torch-free image decoding and resizing, shared by training and `genba predict`
    student.py    the small visual models (compact CNN; EfficientNet-Lite trunk, last stages trained)
    heads.py      concept head (projection + cosine to the bank) and the cross-entropy baseline head
    objective.py  the mapping loss (cosine / contrastive) and the CE objective, engine Objectives
    tasks.py      a stream's tasks in one label space (classes with images first, name-only classes last)
    stream.py     the continual run over a stream (genba.continual's strategies and metrics; MTIL / X-TAIL)
    trunk.py      the EfficientNet-Lite student on genba.backbones
    model_dir.py  a trained model directory; add classes by name
    export.py     `genba export DIR --onnx FILE`;  predict.py: `genba predict` with onnxruntime only

Nothing in this package imports torch at module import time in `predict.py` / `pixels.py`, so
`genba predict` runs on a box without torch.
"""
