"""Small utilities of the engine (memory accounting)."""
