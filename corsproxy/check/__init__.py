"""`corsproxy check`: the browser's side of the Fetch standard (browser.py), an oracle
independent of the proxy's policy, and the command over it.
"""
