"""Training tasks (queue gpu)."""
