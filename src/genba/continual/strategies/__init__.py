"""Continual strategies, one module each, registered by name (see genba.continual for the contract).

    zeroshot, finetune, joint (baselines.py); replay (replay.py); l2, ewc (regularizers.py);
    lwf (lwf.py); zscl (zscl.py); task-adapters, moe-adapters (adapters.py); memory (memory.py);
    rail (rail.py, gradient-free); merge (merge.py, the average of per-task adapters)
"""

from genba.continual.strategies import adapters, baselines, lwf, memory, merge, rail, regularizers, replay, zscl  # noqa: F401,E501
from genba.continual.strategies.base import (ContinualObjective, Strategy, all_rows, concat_data, make_config,
                                             make_strategy, register_strategy, strategy_names)

__all__ = ["ContinualObjective", "Strategy", "all_rows", "concat_data", "make_config", "make_strategy",
           "register_strategy", "strategy_names"]
