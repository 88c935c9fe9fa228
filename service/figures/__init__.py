"""The figures: pure numbers (statistics, aggregation, verdict, fingerprint)."""
