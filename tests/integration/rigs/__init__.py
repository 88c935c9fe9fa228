"""Test rigs: helpers that put real processes and the broker into controlled situations."""
