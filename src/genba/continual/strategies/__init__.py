"""Continual strategies, one module each, registered by name (see genba.continual for the contract).

    zeroshot, finetune, joint (baselines.py); replay (replay.py); l2, ewc (regularizers.py);
    lwf (lwf.py); zscl (zscl.py); task-adapters, moe-adapters (adapters.py); memory (memory.py)
"""

from genba.continual.strategies import adapters, baselines, lwf, memory, regularizers, replay, zscl  # noqa: F401
from genba.continual.strategies.base import (ContinualObjective, Strategy, all_rows, check_compatible, concat_data,
                                             make_config, make_strategy, register_strategy, strategy_names)

__all__ = ["ContinualObjective", "Strategy", "all_rows", "check_compatible", "concat_data", "make_config",
           "make_strategy", "register_strategy", "strategy_names"]
