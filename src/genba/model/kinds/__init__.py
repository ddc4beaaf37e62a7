"""The registered model kinds (importing this package registers them all)."""

from genba.model.kinds import adapt, continual, cvm, movit  # noqa: F401
