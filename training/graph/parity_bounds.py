"""The publish-time parity bounds and where a build records how its graphs were made.

They live apart from `training.graph.merge` (which enforces them) so that
`training.graph.publish_report` (which explains them) can read them without importing
the merge, which imports the report.
"""

from __future__ import annotations

# Stated tolerances of the publish-time check against the merged PyTorch model.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-2
# The manifest key holding how the graphs were made (spliced or built in full).
GRAPH_BUILD_KEY = "graph_build"
