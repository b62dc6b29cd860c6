"""Benchmarks: ``fastweights bench ops`` (the fast-weight ops against their references and SDPA)."""
