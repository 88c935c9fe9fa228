"""The consumer: one delivery from the broker to its ack (decision, run, answer)."""
