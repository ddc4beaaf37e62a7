"""Continual strategies, one module each, registered by name (see genba.continual for the contract).

    zeroshot, finetune, joint (baselines.py); replay (replay.py); l2, ewc (regularizers.py);
    lwf (lwf.py); zscl (zscl.py); task-adapters, moe-adapters (adapters.py); memory (memory.py);
    rail (rail.py, gradient-free); merge (merge.py, the average of per-task adapters)
"""

# Registration order is the order of every listing (CLI errors, bench tables): baselines first.
from genba.continual.strategies import baselines  # noqa: F401  zeroshot, finetune, joint
from genba.continual.strategies import replay  # noqa: F401
from genba.continual.strategies import regularizers  # noqa: F401  l2, ewc
from genba.continual.strategies import lwf  # noqa: F401
from genba.continual.strategies import zscl  # noqa: F401
from genba.continual.strategies import adapters  # noqa: F401  task-adapters, moe-adapters
from genba.continual.strategies import memory  # noqa: F401
from genba.continual.strategies import rail  # noqa: F401  gradient-free
from genba.continual.strategies import merge  # noqa: F401  average of per-task adapters
from genba.continual.strategies.base import STRATEGIES as STRATEGIES_REGISTRY
from genba.continual.strategies.base import (ContinualObjective, Strategy, all_rows, check_compatible, concat_data,
                                             make_config, make_strategy, register_strategy, strategy_names)

__all__ = ["STRATEGIES_REGISTRY", "ContinualObjective", "Strategy", "all_rows", "check_compatible", "concat_data", "make_config",
           "make_strategy", "register_strategy", "strategy_names"]
