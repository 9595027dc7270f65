"""Preference data: the shipped HH-RLHF files and their splits (`hh`), readers for tables of
rows (`tables`), and preference examples from them (`preferences`). Torch-free."""
