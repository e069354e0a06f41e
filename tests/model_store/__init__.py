"""Tests of `model_store/`."""
