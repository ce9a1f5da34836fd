"""The inspector: its page and JSON API under /__corsproxy/ (routes.py, static/)."""
