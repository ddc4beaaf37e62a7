"""A method in RAM kept equal to a stored memory: create, load, add support, predict, update.

Invariant: the method's state is a function of the store's contents. `rebuild` makes it so
(fit on the decoded support entries, then refill the test-time banks, `genba.store.banks`); every
later write goes to RAM and, in the same call, to the store in one transaction, with the RAM rows
set to what the store reads back. If the store moved on meanwhile (another process wrote to the
memory: its version changed) nothing is written; the memory reloads and the request runs again.
Any other failure while recording also reloads, so RAM never holds what the store does not.

A method that learns tensors on the support (dmn's biases, tip-adapter-f's keys, linear-probe's
weights) trains once per support set: its `state_dict()` is kept in the store's learned_states
under `support_fingerprint` (method, full configuration, encoder, text classifier, the static
rows and their classes), and every later rebuild with the same fingerprint (a restart, another
process's write to the test-time banks, a refresh) restores it instead of training again. A
changed support (an upload, a deleted source, a rollback) has another fingerprint and trains.

    store = Store("site.sqlite")
    memory_id = create_memory(store, load_encoder("conse"), "conse", classnames, templates, "dmn-tf")
    live = LiveMemory(store, memory_id)
    live.add_support(encode_images(encoder, images), labels, source_ids)
    probs, writes = live.predict(encode_images(encoder, queries), update=True, source_ids=ids)
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from dataclasses import asdict

import numpy as np
import torch

from genba import features
from genba.errors import GenbaError
from genba.methods import Feats, create_method, get_method, make_config, method_names
from genba.store import banks as bank_io
from genba.store.codec import roundtrip
from genba.store.db import STATIC, Entries, Receipt, Rejection, StaleMemory, Store, UnusableMemory, Write
from genba.store.spec import MemorySpec

log = logging.getLogger(__name__)
LEARNED_FORMAT = "genba-learned-v1"


def create_memory(store: Store, encoder, encoder_spec: str, classnames: list[str], templates: list[str],
                  method: str = "dmn-tf", hyperparameters: dict | None = None, *, token_hash: str | None = None,
                  **policy) -> str:
    """Validate a memory definition, compute its text classifier and add it to the store; returns its id.

    Args:
        encoder: the loaded encoder named by `encoder_spec`.
        policy: MemorySpec fields feature_format, max_age_s, max_per_class, name.
    """
    from genba.zeroshot import text_classifier

    has_text = bool(getattr(encoder, "has_text", True))
    spec = MemorySpec(classnames=list(classnames), templates=list(templates), encoder=encoder_spec,
                      encoder_provenance=encoder.provenance, dim=int(encoder.embed_dim), method=method,
                      hyperparameters=dict(hyperparameters or {}), has_text=has_text, **policy)  # types, magnitudes
    make_config(method, spec.hyperparameters)  # unknown method, hyperparameter or out of range -> GenbaError now
    if not has_text:
        if not get_method(method).works_without_text():
            able = [n for n in method_names() if get_method(n).works_without_text()]
            raise GenbaError(f"method {method!r} needs class text features, but encoder {encoder_spec!r} is vision-only "
                             f"(no text tower); use one of: {', '.join(able)}")
        text = np.zeros((spec.num_classes, spec.dim), dtype=np.float32)  # stored for the layout; never read
    else:
        text = text_classifier(encoder, spec.classnames, spec.templates).numpy()  # (C, D)
    return store.create_memory(spec, text, token_hash=token_hash)


def check_encoder(spec: MemorySpec, encoder) -> None:
    """Raise GenbaError unless `encoder` computes the function the memory was built with."""
    if encoder.provenance != spec.encoder_provenance:
        raise GenbaError(f"memory was built with encoder {spec.encoder_provenance!r} but {encoder.provenance!r} is loaded; "
                         f"features of different encoders are not comparable: load '{spec.encoder}' with its original weights")
    if int(encoder.embed_dim) != spec.dim:
        raise GenbaError(f"memory holds {spec.dim}-d features but encoder {spec.encoder!r} makes {int(encoder.embed_dim)}-d "
                         "ones; import it on a server whose encoder matches the one it was built with")


def encode_images(encoder, images: list) -> torch.Tensor:
    """RGB PIL images -> (N, D) joint features (genba.features.encode_images, batched)."""
    return features.encode_images(encoder, images)[0]


def static_rows(entries: Entries) -> list[int]:
    """Positions of the labelled support rows among a memory's entries, in write order."""
    return [i for i, b in enumerate(entries.banks) if b == STATIC]


def support_fingerprint(spec: MemorySpec, text, entries: Entries) -> str:
    """sha256 of everything a trained method's learned tensors depend on: the method and its full
    configuration (defaults included), the encoder, the text classifier and the static rows with
    their classes, in order. Equal fingerprints -> a seeded fit would learn the same tensors."""
    static = static_rows(entries)
    config = asdict(make_config(spec.method, spec.hyperparameters))
    head = {"format": LEARNED_FORMAT, "method": spec.method, "config": config, "encoder": spec.encoder_provenance,
            "classes": spec.num_classes, "has_text": spec.has_text}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(text, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(entries.feats.reshape(len(entries.banks), -1)[static], dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(entries.classes[static], dtype="<i8").tobytes())
    return digest.hexdigest()


def encode_learned(tensors: dict[str, torch.Tensor], fingerprint: str) -> bytes:
    """A method's learned tensors as an artefact blob (kind "learned-state") bound to its support fingerprint."""
    from genba.artefact import encode_artefact

    return encode_artefact(kind="learned-state", meta={"format": LEARNED_FORMAT, "fingerprint": fingerprint},
                           tensors={k: v.detach().float() for k, v in tensors.items()})


def decode_learned(blob: bytes | None, fingerprint: str) -> dict[str, torch.Tensor] | None:
    """The verified tensors of a learned-state blob (genba.artefact: checksum, finite float32 tensors,
    written for this very `fingerprint`), or None for a missing or untrustworthy blob: the method
    then trains again, a bad state is never served."""
    if blob is None:
        return None
    from genba.artefact import ArtefactError, decode_artefact
    from genba.metaschema import Schema, Str

    def bound(meta, tensors):
        if meta["fingerprint"] != fingerprint:
            return "it was stored for another support fingerprint"
        return None if all(t.dtype == torch.float32 for t in tensors.values()) else "its tensors are not float32"

    schema = Schema({"format": Str(choices=(LEARNED_FORMAT,)), "fingerprint": Str(max_len=64)}, check=bound)
    try:
        return decode_artefact(blob, kind="learned-state", schema=schema, max_bytes=1 << 31,
                               name=f"learned state {fingerprint[:12]}").tensors
    except ArtefactError as error:
        log.warning("%s: training again", error)
        return None


def build_method(spec: MemorySpec, text, state: dict, entries: Entries, *, learned: dict | None = None):
    """The method a memory's entries define (fit on the static bank, banks refilled), or None
    while a method that needs labelled support has none; raises on entries the method cannot hold.
    `learned`: the method's state_dict() from an earlier fit with the same support_fingerprint,
    restored instead of training."""
    method = create_method(spec.method, **spec.hyperparameters)
    static = static_rows(entries)
    text_t = torch.from_numpy(np.asarray(text, dtype=np.float32)) if spec.has_text else None
    if static:
        method.fit(text_t, Feats(torch.from_numpy(entries.feats[static])), torch.from_numpy(entries.classes[static]),
                   num_classes=spec.num_classes, learned=learned)
    elif text_t is None:
        return None  # without text every method waits for labelled support
    elif not method.needs_support:
        method.fit(text_t)
    else:
        return None  # waits for labelled support
    if method.test_time:
        method.predict_stream(Feats(torch.zeros(0, spec.dim)))  # builds banks that wait for a first query
        bank_io.restore(bank_io.banks(method), entries)
        bank_io.load_method_state(method, state)
    return method


def with_support(entries: Entries, feats: np.ndarray, classes: list[int], sources: list[str]) -> Entries:
    """`entries` with N new static rows appended (ids -1: not stored yet)."""
    n = len(classes)
    return Entries(ids=np.concatenate([entries.ids, -np.ones(n, dtype=np.int64)]), banks=entries.banks + [STATIC] * n,
                   classes=np.concatenate([entries.classes, np.asarray(classes, dtype=np.int64)]),
                   slots=entries.slots + [None] * n, sources=entries.sources + list(sources),
                   entropies=np.concatenate([entries.entropies, np.full(n, np.nan)]),
                   created=np.concatenate([entries.created, np.zeros(n)]),
                   feats=np.concatenate([entries.feats.reshape(-1, feats.shape[1]), feats]).astype(np.float32),
                   payloads=entries.payloads + [None] * n)


def _write_labels(method, n: int) -> list[int] | None:
    """The dynamic memory's write label of each of the last n queries (-1: none), or None for a
    method that keeps no such label."""
    labels = getattr(method, "write_labels", None)
    return None if labels is None or len(labels) != n else [int(v) for v in labels]


def entropy_of(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-30).log()).sum())


class LiveMemory:
    """One stored memory with its method in RAM; calls are serialised by `lock`.

    Args:
        encoder: if given, refused (GenbaError) unless it is the encoder the memory was built with.
    """

    def __init__(self, store: Store, memory_id: str, *, encoder=None, retries: int = 5, recent: int = 50) -> None:
        self.store, self.id, self.retries = store, memory_id, retries
        self._trial: tuple[str, dict] | None = None  # (support fingerprint, state_dict) of add_support's trial fit
        self.lock = threading.RLock()
        self.recent: deque = deque(maxlen=recent)  # recent predictions, for the status page
        self.write_labels: list[int] | None = None  # of the last predict call (read under `lock`)
        if encoder is not None:
            check_encoder(store.spec(memory_id), encoder)  # before any work: features would not be comparable
        self.rebuild()

    # ------------------------------------------------------------------------------- loading
    def rebuild(self) -> None:
        """Rebuild the method from the store (fit on support, refill banks, restore state).

        A memory whose method cannot be rebuilt (a damaged or foreign store) is kept with
        `method = None` and `broken` set to the reason: it can still be inspected, exported,
        rolled back and erased (delete-by-source), and predict / support say why they refuse.
        """
        with self.lock:
            version, spec, text, state, entries = self.store.load(self.id)
            try:
                method, broken = self._build(spec, text, state, entries, version), None
            except Exception as error:  # noqa: BLE001 - the reason is kept and shown, never swallowed
                method = None
                broken = (f"memory {self.id} cannot be rebuilt from the store ({type(error).__name__}: {str(error)[:200]}); "
                          "inspect, export, roll it back or delete sources, or create a new memory")
            self.spec, self.method, self.version, self.broken = spec, method, version, broken

    def _build(self, spec: MemorySpec, text, state: dict, entries: Entries, version: int):
        """build_method, restoring learned tensors kept for this support (the last trial fit in RAM,
        else the store) and keeping newly trained ones in the store, only while the memory is still
        at `version` (the entries they were trained on: Store.put_learned_state compares and sets)."""
        if not static_rows(entries) or not get_method(spec.method).learns_tensors():
            return build_method(spec, text, state, entries)
        fingerprint = support_fingerprint(spec, text, entries)
        trial, self._trial = self._trial, None
        if trial is not None and trial[0] == fingerprint:  # add_support's trial fit of this very support
            learned, in_store = trial[1], False
        else:
            learned, in_store = decode_learned(self.store.learned_state(self.id, fingerprint), fingerprint), True
        method = None
        if learned is not None:
            try:
                method = build_method(spec, text, state, entries, learned=learned)
            except GenbaError as error:  # stored tensors that do not fit this method: train again
                log.warning("memory %s: stored learned state refused (%s); training again", self.id, error)
                learned = None
        if method is None:
            method = build_method(spec, text, state, entries)
        if learned is None or not in_store:
            tensors = method.state_dict()
            if tensors:
                sources = [entries.sources[i] for i in static_rows(entries)]
                try:
                    if not self.store.put_learned_state(self.id, fingerprint, encode_learned(tensors, fingerprint),
                                                        sources, version=version):
                        log.info("memory %s changed while training: its learned state is not kept", self.id)
                except (sqlite3.Error, GenbaError) as error:  # a cache: the memory works without it
                    log.warning("memory %s: could not keep the learned state (%s)", self.id, error)
        return method

    def refresh(self) -> None:
        """Reload if another writer changed the memory in the store (or the last rebuild failed)."""
        if self.broken or self.store.version(self.id) != self.version:
            self.rebuild()

    # -------------------------------------------------------------------------------- writes
    def add_support(self, feats: torch.Tensor, labels, source_ids: list[str]) -> Receipt:
        """Store labelled features (N, D) as support and refit: fully applied or not at all.

        The method is first built in RAM from the stored entries plus the new rows (as the store
        will read them back); only if that succeeds is the write committed. Should the rebuild
        after the commit still fail (another writer changed the memory meanwhile), the new entries
        are removed again (logged 'rolled-back') before the error is raised.
        """
        feats = torch.as_tensor(feats).float().numpy()
        with self.lock:
            self.refresh()
            _, spec, text, state, entries = self.store.load(self.id)
            if self.broken:
                raise UnusableMemory(self.broken)
            labels = [int(c) for c in labels]
            trial = with_support(entries, roundtrip(feats, spec.feature_format), labels, source_ids)
            try:
                fitted = build_method(spec, text, state, trial)
            except GenbaError as error:
                raise GenbaError(f"support refused, nothing stored: {error}") from None
            except Exception as error:
                raise GenbaError(f"support refused, nothing stored: method {spec.method!r} cannot be fit on it "
                                 f"({type(error).__name__}: {str(error)[:200]})") from None
            tensors = fitted.state_dict() if fitted is not None else {}
            self._trial = (support_fingerprint(spec, text, trial), tensors) if tensors else None  # not trained twice
            receipt = self.store.add_entries(self.id, STATIC, feats, labels, source_ids)
            self.rebuild()
            if self.broken:
                self.store.remove_entries(self.id, receipt.entry_ids, "rolled-back")
                self.rebuild()
                raise GenbaError(f"support refused and undone: {self.broken}")
            return receipt

    def predict(self, feats: torch.Tensor, *, update: bool = False, source_ids: list[str] | None = None
                ) -> tuple[torch.Tensor, list[list[dict]] | None]:
        """Class probabilities (N, C) of features (N, D), in order; with `update` test-time memories learn.

        Returns the probabilities and, with `update`, per query the writes it caused
        ({"bank", "class", "outcome", "entry_id"}; outcome "rejected" when nothing was stored).
        """
        feats = torch.as_tensor(feats).float()
        with self.lock:
            for _ in range(self.retries):
                self.refresh()
                if self.broken:
                    raise UnusableMemory(self.broken)
                if self.method is None:
                    raise GenbaError(f"method {self.spec.method!r} needs labelled support images before it can predict; "
                                     "add some (POST .../support) first")
                if not (update and self.method.test_time):
                    m = copy.deepcopy(self.method) if self.method.test_time else self.method
                    probs = m.predict_stream(Feats(feats))
                    self.write_labels = _write_labels(m, len(feats))
                    self._remember(probs)
                    return probs, None
                try:
                    return self._update(feats, source_ids)
                except StaleMemory:
                    self.rebuild()
                except BaseException:
                    self.version = -1  # RAM may hold writes the store refused: rebuild on the next call
                    raise
            raise StaleMemory(f"memory {self.id} kept changing under concurrent writers; retry the request")

    def _update(self, feats: torch.Tensor, source_ids: list[str] | None):
        if source_ids is None or len(source_ids) != len(feats):
            raise GenbaError("a test-time update needs one source id per query")
        memories = bank_io.banks(self.method)
        primary = next(iter(memories), "dynamic")
        fmt = self.spec.feature_format
        probs, items, per_query, labels = [], [], [], []
        for i in range(len(feats)):
            before = bank_io.mark(memories)
            p = self.method.predict_stream(Feats(feats[i : i + 1]))[0]  # (C,)
            probs.append(p)
            labels.append(_write_labels(self.method, 1))
            done = []
            for bank, c, j, displaced in bank_io.changes(memories, before):
                x, h, payload = bank_io.slot_content(memories[bank], c, j)
                bank_io.sync_row(memories[bank], c, j, roundtrip(x[None], fmt)[0])  # RAM = what the store reads back
                items.append(Write(bank, c, j, x, h, source_ids[i], payload))
                done.append({"bank": bank, "class": c, "outcome": "displaced" if displaced else "entered"})
            if not done:
                items.append(Rejection(source_ids[i], primary, int(p.argmax()), entropy_of(p)))
                done.append({"bank": primary, "class": int(p.argmax()), "outcome": "rejected"})
            per_query.append(done)
        receipt = self.store.record(self.id, items, expected_version=self.version,
                                    state=bank_io.method_state(self.method))
        flat = [w for q in per_query for w in q if w["outcome"] != "rejected"]
        for w, entry_id in zip(flat, receipt.entry_ids):
            w["entry_id"] = entry_id
        self.version = receipt.version
        if receipt.removed:
            self.rebuild()  # retention removed entries: queues are renumbered in the store
        out = torch.stack(probs) if probs else torch.zeros(0, self.spec.num_classes)
        self.write_labels = None if any(w is None for w in labels) else [w[0] for w in labels]
        self._remember(out)
        return out, per_query

    def _remember(self, probs: torch.Tensor) -> None:
        now = time.time()
        for p in probs:
            c = int(p.argmax())
            self.recent.append({"time": now, "class": self.spec.classnames[c], "confidence": float(p[c]),
                                "entropy": entropy_of(p) / math.log(max(2, len(p)))})

    # ------------------------------------------------------------------------------ history
    def snapshot(self, label: str = "") -> int:
        with self.lock:
            return self.store.snapshot(self.id, label)

    def rollback(self, snapshot_id: int) -> Receipt:
        with self.lock:
            receipt = self.store.rollback(self.id, snapshot_id)
            self.rebuild()
            return receipt

    def delete_source(self, source_id: str, *, vacuum: bool = False) -> dict:
        with self.lock:
            counts = self.store.delete_source(source_id, self.id, vacuum=vacuum)
            self.rebuild()
            return counts

    def apply_retention(self) -> int:
        with self.lock:
            removed = self.store.apply_retention(self.id)
            if removed:
                self.rebuild()
            return removed

    def fill(self) -> dict[str, list[int]]:
        return self.store.fill(self.id)


__all__ = ["LiveMemory", "check_encoder", "create_memory", "encode_images"]
