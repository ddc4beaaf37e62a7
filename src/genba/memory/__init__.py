"""Feature memories shared by every memory method: one read kernel, a dynamic and a static memory."""

from genba.memory.dynamic import DynamicMemory
from genba.memory.read import affinity_read, entropy, l2_normalize, memory_read
from genba.memory.static import StaticMemory

__all__ = ["DynamicMemory", "StaticMemory", "affinity_read", "entropy", "l2_normalize", "memory_read"]
