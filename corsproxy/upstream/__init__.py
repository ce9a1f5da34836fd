"""Towards the upstream: routes (route.py), header rules both ways, cookie and redirect
rewriting, the two clients behind one interface (client.py), the WebSocket relay, TLS.
"""
