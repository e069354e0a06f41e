"""Fitting one task branch: objectives, the task model, the trunk cache, the training loop,
distillation, data parallelism, and the branch artifact.
"""
