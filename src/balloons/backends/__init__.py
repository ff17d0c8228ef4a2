"""Machine backends: where a job attempt's machine comes from."""

from .base import Backend, BackendContext

__all__ = ["Backend", "BackendContext"]
