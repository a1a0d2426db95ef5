"""The factories langgraph.json names: memory_tiers' checkpointer and store for the server.

Both lease the one MemoryManager of the process (the one agent.py builds its nodes from), so
the graph's memory nodes, its checkpoints and its store share connections and configuration.
"""

from memory_tiers.integrations.server import checkpointer, store

__all__ = ["checkpointer", "store"]
