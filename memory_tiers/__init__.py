"""memory_tiers: three tiers of memory (working, session, long-term) for LangGraph agents."""

from memory_tiers.config import MemoryTiersConfig
from memory_tiers.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    InvalidIdentifierError,
    MemoryTiersError,
    MissingDependencyError,
    NotFoundError,
    OwnershipError,
    StateSchemaError,
    SummarizerError,
    ThreadConflictError,
    ThreadLockTimeoutError,
    UnsafeCheckpointError,
    UsageError,
)
from memory_tiers.extractors import FactCandidate, FactExtractor
from memory_tiers.manager import MemoryManager
from memory_tiers.state import MemoryState

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "FactCandidate",
    "FactExtractor",
    "InvalidIdentifierError",
    "MemoryManager",
    "MemoryState",
    "MemoryTiersConfig",
    "MemoryTiersError",
    "MissingDependencyError",
    "NotFoundError",
    "OwnershipError",
    "StateSchemaError",
    "SummarizerError",
    "ThreadConflictError",
    "ThreadLockTimeoutError",
    "UnsafeCheckpointError",
    "UsageError",
]
