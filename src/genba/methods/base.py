"""The contract every adaptation method follows, on pre-computed features.

    method = create_method("dmn-tf", beta=5.5)
    method.fit(text_classifier, support=Feats(joint, cache), labels=y)   # (C, Dt), (N, ...), (N,)
    probs = method.predict_stream(Feats(joint_q, cache_q), order)      # (N, C), input order

Features come in two spaces: `joint`, the space of the text classifier (text logits are
scale * cos(image, class text)), and `cache`, the space the memories keep (the VLM's joint space
again, or the encoder's visual features). Either may carry V test-time views, (N, V, D), view 0
being the un-augmented image. Test-time methods consume queries in `order` and update their
memories as they go; `reset()` returns them to the state right after `fit`.

Vision-only encoders (DINOv2) have no text classifier: `fit(None, support, labels,
num_classes=C)`. Methods whose class declares `text_optional = True` itself (the declaration is
not inherited: a subclass may need text again) then run with the text logits absent, which
`text_logits` returns as zeros; every other method refuses with a GenbaError naming those that can.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from genba.errors import GenbaError
from genba.memory.dynamic import check_features, check_labels
from genba.memory.read import l2_normalize


@dataclass(frozen=True)
class Feats:
    """Image features of N images: (N, D) or (N, V, D) per space."""

    joint: torch.Tensor
    """Features in the text classifier's space, for the text logits."""
    cache: torch.Tensor | None = None
    """Features for memories and caches; None means the memories live in the joint space."""

    def __len__(self) -> int:
        return int(self.joint.shape[0])


def _views(x: torch.Tensor, dim: int | None, what: str) -> torch.Tensor:
    """Validate (N, D) or (N, V, D) features and return unit rows as (N, V, D) float32."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        raise GenbaError(f"{what} must be a tensor of shape (N, D) or (N, V, D)")
    x3 = x[:, None] if x.dim() == 2 else x
    d = x3.shape[2] if dim is None else dim
    flat = check_features(x3.reshape(-1, x3.shape[-1]), d, what)
    return l2_normalize(flat).view(x3.shape)


def check_order(order, n: int) -> torch.Tensor:
    """Validate a permutation of range(n) (None -> identity)."""
    if order is None:
        return torch.arange(n)
    o = torch.as_tensor(np.asarray(order))
    if o.dim() != 1 or o.shape[0] != n or o.dtype.is_floating_point or not torch.equal(o.sort().values, torch.arange(n)):
        raise GenbaError(f"order must be a permutation of range({n}); record it with the seed that made it")
    return o.long()


class Method:
    """Base class: validation and the joint/cache split; subclasses implement `_fit` and `_predict`."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type]
    needs_support: ClassVar[bool] = False
    test_time: ClassVar[bool] = False
    uses_cache: ClassVar[bool] = True  # False: cache features are accepted and ignored
    selection_grid: ClassVar[dict[str, list]] = {}
    """Hyperparameter grid scored on the validation split (`--select val`), fixed before any result."""
    shown_hyperparameters: ClassVar[tuple[str, ...]] = ()
    """The hyperparameters result tables print for this method."""
    text_optional: ClassVar[bool] = False  # True (declared on the class itself): runs without a text classifier

    @classmethod
    def learns_tensors(cls) -> bool:
        """True when fitting trains tensors (the class implements `_train`): what `state_dict` keeps."""
        return cls._train is not Method._train

    @classmethod
    def works_without_text(cls) -> bool:
        """True when this very class declares `text_optional` (not inherited)."""
        return bool(cls.__dict__.get("text_optional", False))

    def __init__(self, config=None) -> None:
        self.config = self.config_cls() if config is None else config
        if not isinstance(self.config, self.config_cls):
            raise GenbaError(f"{self.name} takes a {self.config_cls.__name__}, got {type(self.config).__name__}")
        self.text: torch.Tensor | None = None
        self.space: tuple[str, int] | None = None  # ("joint" | "cache", dim) of the memories

    # --------------------------------------------------------------------------- public API
    def fit(self, text_classifier: torch.Tensor | None, support: Feats | None = None, labels=None, *,
            val: tuple[Feats, torch.Tensor] | None = None, num_classes: int | None = None,
            learned: dict[str, torch.Tensor] | None = None) -> None:
        """Build the method from the text classifier and (if it uses them) labelled support features.

        Args:
            text_classifier: (C, Dt) class text features (normalised here), or None for a
                vision-only encoder (then `num_classes` is required and only methods that
                declare `text_optional` accept it).
            support: few-shot image features, joint (N, [V,] Dt) and optionally cache (N, [V,] Dc);
                giving cache features puts the memories in that space.
            labels: (N,) class indices of the support features.
            val: optional (features, labels) from a validation split; only methods that select
                something during training (tip-adapter-f's epoch) look at it. Never pass test.
            learned: what `state_dict()` returned after an earlier fit on this very support and
                configuration: the learned tensors are restored instead of trained again (how the
                live memory reloads a trained method from the store). Shapes are checked.
        """
        if text_classifier is None:
            if not self.works_without_text():
                from genba.methods.registry import get_method, method_names

                able = [n for n in method_names() if get_method(n).works_without_text()]
                raise GenbaError(f"method {self.name!r} needs class text features, which a vision-only encoder (no text "
                                 f"tower, e.g. DINOv2) cannot make; use one of: {', '.join(able)}")
            if support is None:
                raise GenbaError(f"method {self.name!r} without text features needs labelled support; use --shots >= 1")
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise GenbaError("fit without a text classifier needs num_classes (the number of classes)")
            text, C, dj = None, num_classes, None
        else:
            if not isinstance(text_classifier, torch.Tensor) or text_classifier.dim() != 2:
                raise GenbaError("text_classifier must be a (C, D) tensor of class text features")
            text = l2_normalize(check_features(text_classifier, text_classifier.shape[1], "text classifier"))
            C, dj = text.shape[0], text.shape[1]
        sj = sc = y = space = None
        if support is not None:
            sj, sc, space = self._split(support, dj, "support")
            y = check_labels(labels, len(support), C, "support labels")
            dj = sj.shape[2]
        elif self.needs_support:
            raise GenbaError(f"method {self.name!r} needs labelled support features (few-shot); use --shots >= 1")
        self.text, self.num_classes, self.space, self._fit_space = text, C, space, space
        self.joint_dim, self.fitted = dj, True
        self._fit(sj, sc, y, val)
        if learned is None:
            self._train(sj, sc, y, val)
        else:
            self.load_state_dict(learned)

    def predict_stream(self, queries: Feats, order=None) -> torch.Tensor:
        """Class probabilities (N, C) in the input order; test-time methods adapt in `order`.

        All queries are validated before the first one is processed, so a bad query leaves
        every memory untouched.
        """
        if not getattr(self, "fitted", False):
            raise GenbaError(f"method {self.name!r} must be fit before predict_stream")
        qj, qc, space = self._split(queries, self.joint_dim, "queries")
        if not self.uses_cache:
            space = self.space
        elif self.space is not None and space != self.space:
            raise GenbaError(f"queries are in the {space} memory space but the method holds {self.space}; "
                             "pass cache features consistently (or never) to fit and predict_stream")
        perm = check_order(order, len(queries))
        self.space = space  # the first stream fixes the space of memories built without support
        with torch.no_grad():
            return self._predict(qj, qc, perm)

    def reset(self) -> None:
        """Return test-time memories to their state right after `fit` (no-op for other methods)."""
        self.space = self._fit_space

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The learned tensors of a fitted method (trained cache keys, trained biases), so that a
        fit can be saved in safetensors and restored without retraining; {} for methods that learn
        nothing beyond their memories (the store persists those)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what state_dict() returned, onto a method fitted on the same support."""
        expected = self.state_dict()
        if set(state) != set(expected):
            raise GenbaError(f"{self.name} state has keys {sorted(state)}, expected {sorted(expected)}")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise GenbaError(f"{self.name} state {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(expected[key].shape)}: was it fitted on another support set?")
            if value.is_floating_point() != expected[key].is_floating_point() or (
                    value.is_floating_point() and not bool(torch.isfinite(value).all())):
                raise GenbaError(f"{self.name} state {key!r} holds NaN, infinite or non-float values: it is not restored")
        self._load_state(state)

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Subclasses that learn tensors apply them here."""

    def hyperparameters(self) -> dict:
        """The configuration as a plain dict (for result files)."""
        return asdict(self.config)

    # -------------------------------------------------------------------------- subclass hooks
    def _fit(self, sj, sc, y, val) -> None:
        """Build the method: sj (N, V, Dt), sc (N, V, Dc) unit features (sc is sj when the cache is
        joint), y (N,). Methods that learn tensors create them here at their untrained values, so
        `state_dict()` already has the keys and shapes `load_state_dict` checks against."""

    def _train(self, sj, sc, y, val) -> None:
        """Learn the tensors `state_dict()` returns (through genba.train.fit); skipped when `fit`
        is given `learned`. No-op for methods that learn nothing."""

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- helpers
    @property
    def joint_cache(self) -> bool:
        """True when the memories live in the text classifier's space (they then hold text rows)."""
        return self.space is None or self.space[0] == "joint"

    @staticmethod
    def _split(feats: Feats, dj: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, int]]:
        """Validate features -> joint (N, V, Dt), cache (N, V, Dc) unit rows and the cache space."""
        if not isinstance(feats, Feats):
            raise GenbaError(f"{what} must be genba.methods.Feats(joint=..., cache=...)")
        qj = _views(feats.joint, dj, f"{what} (joint space)")
        qc = qj if feats.cache is None else _views(feats.cache, None, f"{what} (cache space)")
        if qc.shape[:2] != qj.shape[:2]:
            raise GenbaError(f"{what}: joint {tuple(qj.shape[:2])} and cache {tuple(qc.shape[:2])} (N, V) differ")
        return qj, qc, ("joint" if feats.cache is None else "cache", int(qc.shape[2]))

    def text_logits(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """scale * x @ text^T for x (..., Dt) -> (..., C); zeros when there is no text classifier."""
        t = self.text if text is None else text
        if t is None:
            return x.new_zeros(*x.shape[:-1], self.num_classes)
        return self.config.scale * x @ t.T
