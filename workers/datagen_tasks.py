"""Datagen tasks (queue datagen)."""
