"""Offline half of BERT-MTS: fine-tune task branches on a frozen BERT trunk (needs torch)."""
