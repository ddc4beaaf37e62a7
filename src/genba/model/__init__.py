"""genba.model: one model artefact for every part that adapts or trains, and what it can do.

    from genba.model.base import load_model, MODEL_KINDS
    import genba.model.kinds                              # registers every kind
    model = load_model("site.genba")                      # any kind (a run folder works too)
    predictor = MODEL_KINDS.get(model.kind).predictor(model)
    rows, skipped = predict_paths(predictor, image_paths(["new/"]), top_k=3)   # genba.model.predict

This package's __init__ imports nothing heavy: `genba predict --model x.onnx` must run without torch.
"""


def load(path):
    """Load any model (every kind registered)."""
    from genba.model import kinds  # noqa: F401
    from genba.model.base import load_model

    return load_model(path)
