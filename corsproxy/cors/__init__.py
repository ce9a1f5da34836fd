"""The server side of CORS: pure decisions (policy.py) and putting them on an answer (response.py)."""
