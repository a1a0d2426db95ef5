"""The memory-aware graph state."""

from memory_tiers.state.schema import MemoryState

__all__ = ["MemoryState"]
