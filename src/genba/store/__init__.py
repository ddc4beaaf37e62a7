"""Durable memories: one SQLite file (WAL) holding memories, their entries, write log and snapshots.

    from genba.live import LiveMemory, create_memory   # the method <-> store link lives above the store
    from genba.store import Store
    store = Store("site.sqlite")                     # created if absent; a foreign file is refused
    memory_id = create_memory(store, encoder, "conse", classnames, templates, "dmn-tf")
    live = LiveMemory(store, memory_id)              # the method in RAM, rebuilt from the store
    live.add_support(feats, labels, source_ids)      # stored, then refit
    probs, writes = live.predict(feats, update=True, source_ids=ids)   # logged writes

Layers: `codec` (float16 / int8 rows), `spec` (MemorySpec), `schema` (file, pragmas, versions),
`db` + `ops` (transactions, log, retention, snapshots, deletion; no torch), `banks` (the only
code that reads a method's DynamicMemory slots), `archive` (export). `genba.live` (one layer up)
keeps a method in RAM equal to a stored memory.
"""

from genba.store.db import Entries, Receipt, Rejection, StaleMemory, Store, Write
from genba.store.records import UnusableMemory
from genba.store.spec import MemorySpec


def __getattr__(name: str):
    # The torch-side helpers load lazily, so `genba.store.Store` works in processes without torch.
    if name in ("export_memory", "import_memory"):
        from genba.store import archive

        return getattr(archive, name)
    raise AttributeError(f"module 'genba.store' has no attribute {name!r}")


__all__ = ["Entries", "MemorySpec", "Receipt", "Rejection", "StaleMemory", "Store", "UnusableMemory", "Write",
           "export_memory", "import_memory"]
