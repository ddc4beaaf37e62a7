"""genba: adapt pretrained vision and vision-language models where they are used.

Data flows one way: images -> encoder -> cached features -> method -> predictions -> metrics.
"""

from genba.errors import GenbaError

__all__ = ["GenbaError", "__version__"]
__version__ = "0.1.0"
