"""The two transports, both serving the one flow: the front door (frontdoor.py,
exchange.py, wire.py), aiohttp (app.py), and the runner that serves them (runner.py).
"""
