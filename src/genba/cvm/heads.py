"""Prediction heads on a student's pooled feature h (B, F).

ConceptHead (CVM): a linear projection into the frozen language model's concept space and a
cosine against the concept bank T (C, D) (genba.cvm.concepts):
    z = normalize(P h + b),   logits_c = s * cos(z, t_c) = s * z . t_c
with a fixed scale s (CLIP-style temperature 1/s; chosen on the first task's validation split,
genba.cvm.stream.select_loss). T is the bank's rows, or its centred rows (ConceptBank.targets). A class is
one row of T, so classes known only by name get logits too (zero-shot), and the head never grows.

Classes without images (known only by name, or not reached yet in the stream) can be scored in
one of two ways (ConceptHead.unseen; the classes with images, ids < known, are always direct):
  * "direct": logits_u = s * cos(z, t_u), the student's embedding against the row itself;
  * "conse" (Norouzi et al., ICLR 2014, ConSE): the image is expressed through its probabilities
    over the classes with images, p = softmax(s * z T_seen^T), kept for its K most probable
    classes (K = 10, ConSE's T), and the convex combination of their rows is compared with the row:
        e = normalize( sum_{s in top-K} p_s t_s ),   logits_u = s * cos(e, t_u);
and either may subtract a hubness term computed from the concept bank alone (`hub`, CSLS,
Lample et al., ICLR 2018, with its k = 10): r_u = mean of the k largest cos(t_u, t_s) over the
rows with images, logits_u -= s * r_u / 2 (CSLS 2cos - r_x - r_u up to a per-image constant and
a factor 2), so that a name row close to many known rows does not attract every image.

LinearHead (the cross-entropy baseline): logits = W h + b with one row per class of the label
space, a classifier head that grows with the classes (rows of classes without images stay at
their seeded initialisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genba.errors import GenbaError

DEFAULT_SCALE = 20.0
UNSEEN = ("direct", "conse")
CONSE_K = 10  # ConSE's T (Norouzi et al. 2014), fixed in advance
HUB_K = 10    # CSLS's k (Lample et al. 2018), fixed in advance


class ConceptHead(nn.Module):
    kind = "concept"

    def __init__(self, feature_dim: int, bank: torch.Tensor, scale: float = DEFAULT_SCALE, centered: bool = False,
                 unseen: str = "direct", hub: bool = False, conse_k: int = CONSE_K, hub_k: int = HUB_K):
        super().__init__()
        self.centered = bool(centered)  # whether `bank` holds centred targets (genba.cvm.concepts); recorded only
        self.proj = nn.Linear(feature_dim, bank.shape[1])
        self.register_buffer("bank", F.normalize(bank.float(), dim=-1).clone(), persistent=False)
        self.scale = float(scale)
        if unseen not in UNSEEN:
            raise GenbaError(f"unknown scoring of classes without images '{unseen}': choose one of {', '.join(UNSEEN)}")
        if conse_k < 1 or hub_k < 1:
            raise GenbaError(f"conse_k and hub_k must be >= 1, got {conse_k} and {hub_k}")
        self.unseen, self.hub, self.conse_k, self.hub_k = unseen, bool(hub), int(conse_k), int(hub_k)
        self.known = int(bank.shape[0])  # classes [0, known) have images (StreamObjective.set_known keeps it)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, D) unit rows in the concept space."""
        return F.normalize(self.proj(h), dim=-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, C) logits over every class of the bank (see the module docstring)."""
        logits = self.scale * self.embed(h) @ self.bank.T
        return self.score_unseen(logits)

    def score_unseen(self, logits: torch.Tensor) -> torch.Tensor:
        """Replace the direct logits of the classes without images [known, C) by the chosen scoring."""
        known = self.known
        if known >= self.num_classes or (self.unseen == "direct" and not self.hub):
            return logits
        seen, rows = self.bank[:known], self.bank[known:]
        if self.unseen == "conse":
            p = torch.softmax(logits[:, :known], dim=-1)
            top, idx = p.topk(min(self.conse_k, known), dim=-1)
            e = F.normalize((top.unsqueeze(-1) * seen[idx]).sum(1), dim=-1)  # (B, D)
            new = self.scale * e @ rows.T
        else:
            new = logits[:, known:]
        if self.hub:
            r = (rows @ seen.T).topk(min(self.hub_k, known), dim=-1).values.mean(-1)  # (C - known,)
            new = new - self.scale * r / 2
        return torch.cat([logits[:, :known], new], dim=-1)

    def set_bank(self, bank: torch.Tensor) -> None:
        """Replace the concept rows (e.g. after classes were added by name)."""
        self.bank = F.normalize(bank.float(), dim=-1).clone()

    @property
    def num_classes(self) -> int:
        return int(self.bank.shape[0])

    def spec(self) -> dict:
        return {"kind": self.kind, "scale": self.scale, "centered": self.centered, "unseen": self.unseen,
                "hub": self.hub, "conse_k": self.conse_k, "hub_k": self.hub_k}


class LinearHead(nn.Module):
    kind = "linear"

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h)

    @property
    def num_classes(self) -> int:
        return int(self.fc.out_features)

    def spec(self) -> dict:
        return {"kind": self.kind}
