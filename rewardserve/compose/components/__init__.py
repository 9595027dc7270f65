"""A composed reward's components, one file per kind (`spec.py` declares each one's settings)."""
