"""Putting a Decision's headers on a response: ours in, Vary appended, never overwritten."""

from __future__ import annotations

from multidict import CIMultiDict

from corsproxy.cors.policy import ACEH, SAFELISTED_RESPONSE_HEADERS, Decision
from corsproxy.headers import split_list

VARY_ORIGIN = ("Origin",)
# A preflight answer depends on all three request headers; caches must key on them.
PREFLIGHT_VARY_TOKENS = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")


def add_cors_headers(headers: CIMultiDict[str], decision: Decision, vary: tuple[str, ...]) -> None:
    """Add the decision's CORS headers and append ``vary`` to the Vary header.

    README, "How the proxy decides": the answer depends on Origin for allowed, refused and no-Origin
    requests alike, so Vary is appended on every response, merged with the upstream's.
    """
    if decision.expose_response_headers:
        exposed = split_list(dict(decision.headers).get(ACEH))
        exposed += [
            name
            for name in dict.fromkeys(headers.keys())
            if name.lower() not in SAFELISTED_RESPONSE_HEADERS and name.lower() != "vary"
        ]
        if exposed:
            headers[ACEH] = ", ".join(exposed)
    for name, value in decision.headers:
        if name == ACEH and decision.expose_response_headers:
            continue
        headers[name] = value
    append_vary(headers, vary)


def append_vary(headers: CIMultiDict[str], tokens: tuple[str, ...]) -> None:
    existing = headers.getall("Vary", [])
    if not existing:
        headers["Vary"] = ", ".join(tokens)
        return
    present = {token.lower() for value in existing for token in split_list(value)}
    if "*" in present:
        return  # RFC 9110 section 12.5.5: "*" already varies on everything
    missing = [token for token in tokens if token.lower() not in present]
    if missing or len(existing) > 1:
        headers["Vary"] = ", ".join([*existing, *missing])
