"""Long-term memory: profiles, facts, the thread registry and archives on SQL."""
