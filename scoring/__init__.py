"""Offline scoring: a whole file (or, on a Ray cluster, a corpus) through a model store.

Torch-free like the service, whose engine and answer shaping it reuses, so that a file
scored here gets the answers `/v1/tasks/{task}` gives. `bert-mts-score` (or `python -m
scoring`) is the command; `scoring.core` scores one chunk of texts, `scoring.formats`
reads and writes the file formats in chunks, `scoring.local` streams a file with resume,
`scoring.ray_job` runs the same chunk scoring as a Ray Data job.
"""
