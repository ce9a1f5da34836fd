"""Header rules both ways, for both upstream clients: what the upstream sees of a request's
headers, and what the client sees of an answer's (docs/design.md, "Changed, and why")."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict
from yarl import URL

from corsproxy.headers import MET_BY_PROXY, connection_listed, is_hop_by_hop
from corsproxy.upstream.rewrite import restore_cookie_prefixes, rewrite_location, rewrite_set_cookie
from corsproxy.upstream.route import Route


def forwarded_headers(
    incoming: Mapping[str, str], route: Route, *, remote: str, scheme: str, host: str
) -> CIMultiDict[str]:
    """The request's headers as the upstream should see them (RFC 9110 section 7.6), given
    the client's address and the scheme and authority it reached the proxy with."""
    listed = connection_listed(incoming.get("Connection"))
    dropped = route.dropped_names
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        # Host is set from the upstream URL by the client: third-party APIs route on it.
        if lower == "host" or lower in MET_BY_PROXY or lower in dropped or is_hop_by_hop(lower, listed):
            continue
        if lower == "cookie":
            # Cookies whose __Host-/__Secure- prefix had to be set aside on the way out
            # get it back, so the upstream sees the names it set.
            value = restore_cookie_prefixes(value)
        headers.add(name, value)
    for name, value in route.config.request_headers:
        headers[name] = value
    rewrite = route.config.rewrite_origin
    if rewrite != "keep":
        _rewrite_origin(headers, rewrite, route)
    forwarded_for = incoming.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Host"] = host
    return headers


def _rewrite_origin(headers: CIMultiDict[str], rewrite: str, route: Route) -> None:
    """Some APIs check Origin/Referer themselves; show them one they accept, or none."""
    if rewrite == "none":
        headers.popall("Origin", None)
        headers.popall("Referer", None)
        return
    origin = route.upstream_origin if rewrite == "upstream" else rewrite
    if "Origin" in headers:
        headers["Origin"] = origin
    if "Referer" in headers:
        headers["Referer"] = origin + "/"


def returned_headers(
    received: Mapping[str, str], route: Route, *, scheme: str, host: str
) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones and its own Access-Control-*, which the
    proxy replaces so the browser never sees two ACAO lines. Cookies and redirects are
    adapted so they work on the proxy's origin (rewrite.py), given the scheme and
    authority the client reached the proxy with."""
    listed = connection_listed(received.get("Connection"))
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in received.items():
        lower = name.lower()
        if lower.startswith("access-control-") or is_hop_by_hop(lower, listed):
            continue
        if lower == "set-cookie":
            value = rewrite_set_cookie(
                value,
                route.cookie_policy,
                proxy_is_https=scheme == "https",
                upstream_base_path=route.base_path,
                proxy_prefix=route.prefix,
                strip_prefix=route.config.strip_prefix,
            )
        elif lower == "location" and route.config.rewrite_redirects:
            value = (
                rewrite_location(
                    value,
                    upstream_base=route.base,
                    proxy_base=URL.build(scheme=scheme, authority=host),
                    proxy_prefix=route.prefix,
                    strip_prefix=route.config.strip_prefix,
                )
                or value
            )
        headers.add(name, value)
    return headers
