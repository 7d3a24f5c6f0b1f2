"""The relay layer: one GenerationRequest in, one GenerationResult out, whatever the dialect.

No Discord or SQLite imports here: the CLI and the bot share this layer.
"""

from .catalogue import DEFAULT_MODEL, MODELS, ModelSpec, resolve_model, validate
from .types import (
    GenerationRequest,
    GenerationResult,
    GroundingSource,
    InputImage,
    InvalidRequest,
    NoImage,
    RelayConfig,
    RelayError,
    RelayFailed,
    RelayTimeout,
    Usage,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelSpec",
    "resolve_model",
    "validate",
    "GenerationRequest",
    "GenerationResult",
    "GroundingSource",
    "InputImage",
    "InvalidRequest",
    "NoImage",
    "RelayConfig",
    "RelayError",
    "RelayFailed",
    "RelayTimeout",
    "Usage",
]
