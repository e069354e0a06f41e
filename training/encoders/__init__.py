"""Encoders in PyTorch (BERT, MPNet) with the trunk/branch split, checkpoint loading, and
installing a base.
"""
