"""The configuration: frozen dataclasses (model.py), the checker that locates every error
(checker.py), reading a file (loader.py), hot reload (reload.py).
"""
