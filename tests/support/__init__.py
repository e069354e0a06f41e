"""Shared test helpers: tiny models and stores, servers on loopback, command runners, samples."""
