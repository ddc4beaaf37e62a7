"""Adaptation methods on cached features: zero-shot, Tip-Adapter(-F), TDA, Dual Memory Networks, linear probe.

    from genba.methods import Feats, create_method, method_names
    m = create_method("dmn-tf")                        # paper defaults; overrides as keywords
    m.fit(text_classifier, Feats(joint, cache), labels)
    probs = m.predict_stream(Feats(joint_q, cache_q), order)
"""

from genba.methods.base import Feats, Method
from genba.methods.registry import create_method, get_method, make_config, method_names, register_method
from genba.methods.select import select_on_val
from genba.methods.views import confident_views

# Importing the method modules runs their @register_method decorators (order = listing order).
from genba.methods import zeroshot, tip_adapter, tip_adapter_f, tda, dmn, dmn_trained, linear_probe  # noqa: E402,F401

__all__ = ["Feats", "Method", "confident_views", "create_method", "get_method", "make_config",
           "method_names", "register_method", "select_on_val"]
