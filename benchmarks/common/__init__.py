"""What the benchmarks share: serving a store, loading texts, generating load, printing tables."""
