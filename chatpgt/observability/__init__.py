"""Metrics and other views of a running deployment (GET /metrics)."""
