"""The webhook receiver: verify, store durably, answer 200 — fast, at any load."""
