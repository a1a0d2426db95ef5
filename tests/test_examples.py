"""Every example in examples/ runs offline and succeeds, so none can rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def scripts() -> list[str]:
    """The runnable examples; modules they share are named with a leading underscore."""
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_there_are_examples():
    assert scripts()


@pytest.mark.parametrize("script", scripts())
def test_example_runs(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "an example should show what it did"


def test_server_project_graph_builds_offline(tmp_path):
    """examples/langgraph_server/agent.py imports in a fresh interpreter and builds its graph."""
    project = EXAMPLES / "langgraph_server"
    code = "import runpy; g = runpy.run_path('agent.py')['graph']; print(sorted(g.nodes))"
    env = {**os.environ, "MEMORY_TIERS_CONFIG": str(project / "memory_tiers.yaml")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "load_memory" in result.stdout and "save_memory" in result.stdout
    assert not (project / ".memory_tiers").exists(), "building the graph must not touch storage"
