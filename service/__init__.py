"""Online half of BERT-MTS: the HTTP service over a model store (no torch here)."""
