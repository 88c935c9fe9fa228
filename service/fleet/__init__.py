"""The fleet: this worker as one node (identity, status, cancel, health, metrics)."""
