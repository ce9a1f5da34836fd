"""Checks on a request message itself, made before any CORS decision: its Host (host.py)
and what the proxy will not pass on (checks.py).
"""
