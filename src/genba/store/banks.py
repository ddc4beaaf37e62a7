"""The bridge between a method's test-time memories in RAM and the store's entries.

Test-time methods keep their memories as `genba.memory.DynamicMemory` attributes (DMN: `dynamic`;
TDA: `pos` and `neg`). This module is the only place that looks inside them, through their
attributes `rows, valid, entropy, count, payload, gram` and `state_dict` / `load_state_dict`:
  * `mark` / `changes`: which slots one query wrote (a slot changed iff its entropy changed, since
    a displacement needs a strictly lower entropy; slot >= the old count means it entered);
  * `sync_row`: make a slot hold exactly what the store reads back (int8 codes, float32 banks);
  * `restore`: refill the banks from stored entries. The Gram matrix is replayed in write order
    with the memory's own update g = R_c x (float32 mat-vec, cast to the bank dtype), so each
    G_c[a, b] is computed by the later-written of a and b exactly as it was live, and predictions
    after a reload equal those before it bit for bit.
A collapse guard's running prior (`guard._prior`) is the only other state, carried as JSON.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genba.errors import GenbaError
from genba.memory.dynamic import DynamicMemory


def banks(method) -> dict[str, DynamicMemory]:
    """name -> DynamicMemory of every test-time memory the method holds now."""
    return {name: v for name, v in sorted(vars(method).items()) if isinstance(v, DynamicMemory)}


def mark(memories: dict[str, DynamicMemory]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Entropies (C, L) and counts (C,) of each bank, to diff after a query."""
    return {name: (m.entropy.clone(), m.count.clone()) for name, m in memories.items()}


def changes(memories: dict[str, DynamicMemory], before) -> list[tuple[str, int, int, bool]]:
    """(bank, class, slot, displaced) for every slot written since `mark`."""
    out = []
    for name, m in memories.items():
        entropy0, count0 = before[name]
        for c, j in (m.entropy != entropy0).nonzero().tolist():
            out.append((name, c, j, j < int(count0[c])))
    return out


def slot_content(m: DynamicMemory, c: int, j: int) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(feature (D,) float32, entropy, payload (P,) or None) held in slot (c, j)."""
    payload = None if m.payload is None else m.payload[c, j].numpy().astype(np.float32)
    return m.values(c, j).numpy(), float(m.entropy[c, j]), payload


def sync_row(m: DynamicMemory, c: int, j: int, stored: np.ndarray) -> None:
    """Make slot (c, j) hold `stored` (D,), updating the Gram row and column as a write does."""
    x = torch.from_numpy(np.asarray(stored, dtype=np.float32))
    if torch.equal(m.values(c, j), x):
        return
    m.set_row(c, j, x)  # bumps m.changes[c]: readers that cache derived rows (trained DMN) recompute class c


def restore(memories: dict[str, DynamicMemory], entries) -> None:
    """Fill freshly built banks with the stored entries (`genba.store.db.Entries`, write order)."""
    for name, m in memories.items():
        idx = [i for i, b in enumerate(entries.banks) if b == name]
        if not idx:
            continue
        state = m.state_dict()
        rows, valid, ent, count = state["rows"], state["valid"], state["entropy"], state["count"]
        for stamp, i in enumerate(idx, start=1):  # entries come in write order: stamps for the eviction tie-break
            c, j = int(entries.classes[i]), entries.slots[i]
            if j is None or not 0 <= j < m.capacity or not 0 <= c < m.num_classes:
                raise GenbaError(f"stored entry {int(entries.ids[i])} of bank {name!r} has slot {j} outside the memory; "
                                 "the store does not match this method's configuration")
            codes, scale = m.encode(torch.from_numpy(entries.feats[i])[None])
            rows[c, j] = codes[0]
            if "row_scale" in state:
                state["row_scale"][c, j] = scale[0]
            valid[c, j], ent[c, j] = True, float(entries.entropies[i])
            state["written"][c, j] = stamp
            count[c] = max(int(count[c]), j + 1)
            if "payload" in state:
                p = entries.payloads[i]
                if p is None or p.shape != (state["payload"].shape[2],):
                    raise GenbaError(f"stored entry {int(entries.ids[i])} of bank {name!r} lacks its payload")
                state["payload"][c, j] = torch.from_numpy(p)
        if "gram" in state:
            gram = state["gram"]
            for i in idx:  # write order: the later-written row of each pair sets G[a, b], as live
                c, j = int(entries.classes[i]), entries.slots[i]
                vals = rows[c].float() * (state["row_scale"][c][:, None] if "row_scale" in state else 1.0)  # (L+E, D)
                g = (vals @ vals[j]).to(gram.dtype)  # (L+E,)
                gram[c, j, :] = g
                gram[c, :, j] = g
        m.load_state_dict(state)


def method_state(method) -> dict:
    """JSON-able state outside the banks: the collapse guard's running class prior."""
    prior = getattr(getattr(method, "guard", None), "_prior", None)
    return {"guard_prior": None if prior is None else [float(v) for v in prior.tolist()]}


def load_method_state(method, state: dict) -> None:
    """Inverse of `method_state`."""
    prior = (state or {}).get("guard_prior")
    guard = getattr(method, "guard", None)
    if guard is not None and prior is not None:
        if len(prior) != method.num_classes or not all(math.isfinite(v) for v in prior):
            raise GenbaError("stored guard prior does not match the memory's classes; the store is damaged")
        guard._prior = torch.tensor(prior, dtype=torch.float32)
