"""The memory_tiers benchmark suite: ``python -m benchmarks [names...] [--quick]``.

Each benchmark interleaves its variants round-robin in one run and prints p50/p99 (microseconds)
per variant, ratios against a floor measured in the same run, and PASS/MISS per target.
See docs/performance.md. Targets never affect the exit code; only errors do.
"""
