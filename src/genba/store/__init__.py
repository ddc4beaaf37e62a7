"""Durable memories: one SQLite file (WAL) holding memories, their entries, write log and snapshots.

    from genba.store import LiveMemory, Store, create_memory, encode_images
    store = Store("site.sqlite")                     # created if absent; a foreign file is refused
    memory_id = create_memory(store, encoder, "conse", classnames, templates, "dmn-tf")
    live = LiveMemory(store, memory_id)              # the method in RAM, rebuilt from the store
    live.add_support(feats, labels, source_ids)      # stored, then refit
    probs, writes = live.predict(feats, update=True, source_ids=ids)   # logged writes

Layers: `codec` (float16 / int8 rows), `spec` (MemorySpec), `schema` (file, pragmas, versions),
`db` + `ops` (transactions, log, retention, snapshots, deletion; no torch), `banks` (the only
code that reads a method's DynamicMemory slots), `live` (method <-> store), `archive` (export).
"""

from genba.store.db import Entries, Receipt, Rejection, StaleMemory, Store, UnusableMemory, Write
from genba.store.spec import MemorySpec


def __getattr__(name: str):
    # The torch-side helpers load lazily, so `genba.store.Store` works in processes without torch.
    if name in ("LiveMemory", "check_encoder", "create_memory", "encode_images"):
        from genba.store import live

        return getattr(live, name)
    if name in ("export_memory", "import_memory"):
        from genba.store import archive

        return getattr(archive, name)
    raise AttributeError(f"module 'genba.store' has no attribute {name!r}")


__all__ = ["Entries", "LiveMemory", "MemorySpec", "Receipt", "Rejection", "StaleMemory", "Store", "UnusableMemory", "Write", "check_encoder",
           "create_memory", "encode_images", "export_memory", "import_memory"]
