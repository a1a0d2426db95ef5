"""The graph `langgraph dev` serves: load memory -> an offline responder -> save memory.

The server compiles nothing itself: it takes this graph and gives it the checkpointer and store
that langgraph.json names (memory.py). The nodes come from the same shared manager, so they
work once the server has opened it. Swap ``Responder`` for your model-calling agent.
"""

from memory_tiers import MemoryState
from memory_tiers.cli.responder import Responder
from memory_tiers.integrations.server import manager

memory = manager()
responder = Responder(user_key=memory.config.ids.user)
# No checkpointer here: the server brings the one named in langgraph.json.
graph = memory.nodes.around(responder.respond, MemoryState).compile(name="agent")
