"""The workload engine: one request, no broker (paths, plan, runs, results)."""
