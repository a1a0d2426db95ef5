"""Working memory: each thread's graph state, checkpointed by LangGraph's own savers."""

from memory_tiers.working.checkpointer import open_checkpointer, setup_checkpointer

__all__ = ["open_checkpointer", "setup_checkpointer"]
