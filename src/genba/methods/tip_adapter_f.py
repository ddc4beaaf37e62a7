"""Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned on the few-shot set.

The keys K (N, D), initialised from the cache, become parameters; values stay one-hot.
Training minimises cross-entropy of the Tip-Adapter logits

    logits = scale * q_joint W^T + alpha * exp(-beta * (1 - q_cache K^T)) @ L

on the support set with AdamW (eps 1e-4, torch's default weight decay 0.01) and a cosine
schedule, as the reference code does (github.com/gaopengcuhk/Tip-Adapter, main.py
run_tip_adapter_F), through genba's one training engine (`train` holds lr, epochs, batch
size, seed; set them with `--set train.lr=...`).

`tip-adapter-f` follows the reference in what changes results:
  * it trains with the reference's training values `init_alpha`, `init_beta` (configs/*.yaml:
    init_beta 1 everywhere, init_alpha 1.17 for ImageNet, Food101, OxfordPets, SUN397, 2-10
    elsewhere). genba's datasets have no counterpart there, so the default is the ImageNet
    config (main_imagenet.py, the paper's headline setting): init_alpha 1.17, init_beta 1,
    search_scale [7, 3], search_step [200, 20]. Nothing here was chosen on test labels;
  * after training it searches beta x alpha on the validation split WITH THE TRAINED KEYS
    (utils.py search_hp): beta_i = i (7 - 0.1) / 200 + 0.1 for i < 200 (outer loop), alpha_j =
    j (3 - 0.1) / 20 + 0.1 for j < 20 (inner loop), the first strictly best top-1 wins; predictions
    use the pair found. Without a validation split (or with `search=False`, or alpha/beta
    set) the training values are kept, as the reference with search_hp False;
  * the cache may be built from augmented views of each support image (`genba adapt
    --support-views 10`: the reference's augment_epoch = 10 random resized crops + flips,
    averaged), and each training step then feeds one of those views per image. The reference
    draws a fresh crop every epoch; genba draws from the V cached views (fewer distinct crops,
    the same distribution, and the features stay cacheable).
  * the reference keeps the epoch with the best TEST accuracy; genba keeps the last epoch, or
    the best on `val` if given (scored with init_alpha, init_beta as the reference scores epochs).

`tip-adapter-f-legacy` is genba's earlier variant, kept for comparison: it trains and predicts
with the paper's fixed alpha = 1, beta = 5.5, and `--select val` retrains at every point of the
grid alpha x beta (the selection_grid shared with tip-adapter) instead of searching once after
training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import check_labels
from genba.methods.config import non_negative, positive
from genba.methods.registry import register_method
from genba.methods.tip_adapter import TipAdapter
from genba.methods.training import SupportData, check_train
from genba.device import CPU
from genba.train import Objective, TrainConfig, fit


def _paper_training() -> TrainConfig:
    return TrainConfig(lr=1e-3, epochs=20, batch_size=256, eps=1e-4, weight_decay=0.01)


def reference_grid(upper: float, steps: int) -> list[float]:
    """search_hp's candidate list: [i * (upper - 0.1) / steps + 0.1 for i in range(steps)]."""
    return [i * (upper - 0.1) / steps + 0.1 for i in range(steps)]


def search_alpha_beta(text_logits: torch.Tensor, affinity: torch.Tensor, values: torch.Tensor, labels: torch.Tensor,
                      betas: list[float], alphas: list[float]) -> tuple[float, float, float]:
    """The reference's post-training search (utils.py search_hp) on validation.

    Args:
        text_logits: (M, C) scale * q W^T of the validation queries.
        affinity: (M, N) q K^T with the trained keys (the reference's adapter(features)).
        values: (N, C) one-hot cache values.
        labels: (M,) validation labels.
        betas, alphas: candidates; beta is the outer loop, alpha the inner one.

    Returns:
        (beta, alpha, top-1 %) of the first strictly best pair; (0, 0, 0) if nothing scores
        above 0, as the reference returns its initial best_beta, best_alpha = 0, 0.
    """
    best_acc, best_beta, best_alpha = 0.0, 0.0, 0.0
    alpha_t = torch.tensor(alphas, dtype=affinity.dtype)[:, None, None]  # (A, 1, 1)
    for beta in betas:
        cache = ((-1) * (beta - beta * affinity)).exp() @ values  # (M, C), the reference's expression
        tip = text_logits[None] + cache[None] * alpha_t  # (A, M, C), tip_logits per alpha
        accs = 100.0 * (tip.argmax(-1) == labels[None]).float().mean(-1)  # (A,)
        for alpha, acc in zip(alphas, accs.tolist()):
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha, best_acc


@dataclass
class TipAdapterFConfig:
    init_alpha: float = 1.17
    """alpha while training (reference configs: 1.17 ImageNet/Food101/Pets/SUN397, 2 DTD/EuroSAT, 3, 5, 10)."""
    init_beta: float = 1.0
    """beta while training (reference: 1 in every config)."""
    alpha: float | None = None
    """alpha at prediction; None: found by the post-training search on validation (else init_alpha)."""
    beta: float | None = None
    """beta at prediction; None: found by the post-training search on validation (else init_beta)."""
    search: bool = True
    """Run the reference's beta x alpha search on validation after training (needs `val`)."""
    search_beta_max: float = 7.0
    """search_scale[0] (reference ImageNet: 7; others 10-50)."""
    search_alpha_max: float = 3.0
    """search_scale[1] (reference ImageNet: 3; others 5-50)."""
    search_beta_steps: int = 200
    """search_step[0] (reference: 200)."""
    search_alpha_steps: int = 20
    """search_step[1] (reference: 20)."""
    scale: float = 100.0
    """CLIP's logit scale for the text logits."""
    train: TrainConfig = field(default_factory=_paper_training)
    """Training settings (paper: lr 0.001, 20 epochs; reference code: batch 256)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        non_negative(self, "init_alpha", *(n for n in ("alpha",) if self.alpha is not None))
        positive(self, "init_beta", "scale", "search_beta_max", "search_alpha_max", "search_beta_steps",
                 "search_alpha_steps", *(n for n in ("beta",) if self.beta is not None))
        check_train(self)


@dataclass
class TipAdapterFLegacyConfig:
    alpha: float = 1.0
    """alpha, residual ratio of the cache logits (trained and predicted with)."""
    beta: float = 5.5
    """beta, sharpness of the affinities."""
    scale: float = 100.0
    """CLIP's logit scale for the text logits."""
    train: TrainConfig = field(default_factory=_paper_training)
    """Training settings (paper: lr 0.001, 20 epochs; reference code: batch 256)."""

    def __post_init__(self) -> None:
        non_negative(self, "alpha")
        positive(self, "beta", "scale")
        check_train(self)


class CacheKeysObjective(Objective):
    """Cross-entropy of Tip-Adapter's logits with learnable keys, one random view per image."""

    def __init__(self, method: "TipAdapterF", support: SupportData, val, alpha: float, beta: float) -> None:
        super().__init__()
        self.method, self.support, self.val, self.alpha, self.beta = method, support, val, alpha, beta
        self.keys = torch.nn.Parameter(method.keys.clone())  # (N, Dc)

    def forward(self, batch) -> torch.Tensor:
        sj, sc, y = self.support.one_view(batch["i"])
        return torch.nn.functional.cross_entropy(self.method.logits(sj, sc, self.keys, self.alpha, self.beta), y)

    def validate(self) -> float | None:
        if self.val is None:
            return None
        vj, vc, vy = self.val
        logits = self.method.logits(vj[:, 0], vc[:, 0], self.keys, self.alpha, self.beta)
        return (logits.argmax(1) == vy).float().mean().item()


class _TrainedKeys(TipAdapter):
    """Shared by both variants: validated val features, key training, the keys as learned state."""

    def _checked_val(self, val):
        if val is None:
            return None
        vj, vc, vspace = self._split(val[0], self.text.shape[1] if self.text is not None else None, "validation features")
        if vspace != self.space:
            raise GenbaError(f"validation features are in the {vspace} space, the support in {self.space}")
        return vj, vc, check_labels(val[1], len(val[0]), self.num_classes, "validation labels")

    def _train_keys(self, sj, sc, y, checked_val, alpha: float, beta: float) -> None:
        support = SupportData(sj, sc, y)
        objective = CacheKeysObjective(self, support, checked_val, alpha, beta)
        # few-shot support rows: trained on the CPU whatever --device says (the method's tensors live there)
        fit(objective, support.rows(), self.config.train, progress=False, desc=self.name, hardware=CPU)
        self.keys = objective.keys.detach()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys} if getattr(self, "keys", None) is not None else {}

    def _load_state(self, state) -> None:
        self.keys = state["keys"].clone().float()


@register_method("tip-adapter-f")
class TipAdapterF(_TrainedKeys):
    """Tip-Adapter with learnable cache keys, trained and searched as the reference code does."""

    config_cls = TipAdapterFConfig
    selection_grid: dict = {}  # the reference searches alpha, beta after training, on validation (in _train)
    shown_hyperparameters = ("alpha", "beta", "init_alpha", "init_beta")

    def _fit(self, sj, sc, y, val) -> None:
        super()._fit(sj, sc, y, val)
        cfg = self.config
        self.found = torch.tensor([cfg.init_alpha if cfg.alpha is None else cfg.alpha,
                                   cfg.init_beta if cfg.beta is None else cfg.beta])  # (alpha, beta) at prediction

    def _train(self, sj, sc, y, val) -> None:
        cfg = self.config
        checked_val = self._checked_val(val)
        self._train_keys(sj, sc, y, checked_val, cfg.init_alpha, cfg.init_beta)
        self.searched_on_val = False
        if checked_val is None or not cfg.search or (cfg.alpha is not None and cfg.beta is not None):
            return
        vj, vc, vy = checked_val
        with torch.no_grad():
            betas = [cfg.beta] if cfg.beta is not None else reference_grid(cfg.search_beta_max, cfg.search_beta_steps)
            alphas = [cfg.alpha] if cfg.alpha is not None else reference_grid(cfg.search_alpha_max, cfg.search_alpha_steps)
            beta, alpha, _ = search_alpha_beta(self.text_logits(vj[:, 0]), vc[:, 0] @ self.keys.T, self.values, vy,
                                               betas, alphas)
        self.found, self.searched_on_val = torch.tensor([alpha, beta]), True

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.found.tolist()
        return self.logits(qj[:, 0], qc[:, 0], self.keys, alpha, beta).softmax(-1)  # (N, C)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        return {**state, "alpha_beta": self.found} if state else {}

    def _load_state(self, state) -> None:
        super()._load_state(state)
        self.found = state["alpha_beta"].clone().float()

    def hyperparameters(self) -> dict:
        """The configuration with the alpha and beta used at prediction (searched or given)."""
        found = getattr(self, "found", None)
        values = {} if found is None else {"alpha": float(found[0]), "beta": float(found[1])}
        return {**asdict(self.config), **values}


@register_method("tip-adapter-f-legacy")
class TipAdapterFLegacy(_TrainedKeys):
    """genba's earlier Tip-Adapter-F: trained and predicted with one fixed alpha, beta."""

    config_cls = TipAdapterFLegacyConfig

    def _train(self, sj, sc, y, val) -> None:
        self._train_keys(sj, sc, y, self._checked_val(val), self.config.alpha, self.config.beta)
