"""``examples/notebook.py`` runs end to end on the embedded sandbox."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

NOTEBOOK = REPO / "examples" / "notebook.py"


def test_the_notebook_example_runs_end_to_end(tmp_path):
    samples_before = sorted(p.name for p in (REPO / "sample-data").iterdir())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSPEO_")}
    # The platform cache directory is where the default response cache would go.
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    run = subprocess.run(
        [sys.executable, str(NOTEBOOK)],
        cwd=cwd,  # the example finds the repository from its own path
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert "notebook example finished: 120 leads enriched" in lines
    assert "120 rows: {'matched': 103, 'not_matched': 9, 'invalid_datapoints': 8, 'failed': 0, 'deferred': 0}; 89 credits, 111 records sent" in lines
    assert "111 answers from the cache, 0 credits" in lines
    assert list(cwd.iterdir()) == [], "the example writes only to its temporary directory"
    assert not home.exists(), "nor to the default response cache"
    assert sorted(p.name for p in (REPO / "sample-data").iterdir()) == samples_before
