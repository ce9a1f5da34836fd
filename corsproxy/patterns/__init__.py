"""Patterns compiled once at load: origins (origins.py) and path globs (globs.py)."""
