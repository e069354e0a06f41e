"""The publish report explains the merge's bounds without importing the merge."""

from __future__ import annotations

import subprocess
import sys


def test_publish_report_imports_without_the_merge() -> None:
    # merge.py imports the report; the report importing merge back was a cycle.
    code = "import sys, training.graph.publish_report;print('training.graph.merge' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
