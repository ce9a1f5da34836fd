"""Make an upstream's redirects and cookies work for a frontend talking to the proxy.

Pure functions of strings and plain settings, no I/O: the proxy calls them on each
``Set-Cookie``/``Location`` line of a response and each ``Cookie`` line of a request.

Two things break when an API on ``https://api.example.com/v1`` is reached through
``http://localhost:8080/api``:

- an absolute ``Location`` sends the browser straight to the upstream, out of the proxy
  (and out of its CORS headers): :func:`rewrite_location` maps it back;
- the upstream's cookies never stick: ``Domain=example.com`` does not domain-match
  ``localhost``, ``Secure`` is refused from a non-secure origin, ``SameSite=None`` is refused
  without ``Secure``, and ``Path=/v1`` never matches ``/api``: :func:`rewrite_set_cookie`
  fixes each, as :class:`CookiePolicy` says.

Section numbers refer to draft-ietf-httpbis-rfc6265bis ("RFC 6265bis") and RFC 9110.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from yarl import URL

from corsproxy.patterns.origins import origin_of

COOKIE_DOMAIN_CHOICES = ("rewrite", "keep")
COOKIE_SECURE_CHOICES = ("auto", "keep")
COOKIE_SAMESITE_CHOICES = ("auto", "keep", "Lax", "Strict", "None")
COOKIE_PATH_CHOICES = ("rewrite", "keep")

# Prepended to a prefixed cookie name whose prefix the rewritten cookie no longer
# satisfies; removed again from the Cookie request header by restore_cookie_prefixes.
RENAMED_PREFIX_MARKER = "corsproxy-"

# RFC 6265bis section 4.1.3: the browser refuses a cookie whose name carries one of these
# prefixes unless its attributes keep the prefix's promise. Newer drafts match the prefix
# case-insensitively (section 5.7, storage model), so this module does too.
SECURE_PREFIX = "__secure-"
HOST_PREFIX = "__host-"


@dataclass(frozen=True)
class CookiePolicy:
    """How ``Set-Cookie`` lines from the upstream are adapted for the proxy's origin."""

    # "rewrite": drop Domain= so the cookie becomes host-only on the proxy's host; "keep".
    domain: str = "rewrite"
    # "auto": drop Secure when the proxy is served over http; "keep".
    secure: str = "auto"
    # "auto": SameSite=None without Secure becomes Lax; "keep"; or "Lax"/"Strict"/"None" forced.
    samesite: str = "auto"
    # "rewrite": map Path from the upstream's path space to the proxy's; "keep".
    path: str = "rewrite"

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("domain", self.domain, COOKIE_DOMAIN_CHOICES),
            ("secure", self.secure, COOKIE_SECURE_CHOICES),
            ("samesite", self.samesite, COOKIE_SAMESITE_CHOICES),
            ("path", self.path, COOKIE_PATH_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"cookie {name}: {value!r} is not one of {', '.join(choices)}")


def rewrite_set_cookie(
    value: str,
    policy: CookiePolicy,
    *,
    proxy_is_https: bool,
    upstream_base_path: str,
    proxy_prefix: str,
    strip_prefix: bool,
) -> str:
    """One ``Set-Cookie`` field value, adapted so the browser stores it for the proxy.

    ``value`` is ONE header line: commas inside ``Expires`` dates are safe because only
    ``;`` separates attributes (RFC 6265bis section 5.6). The name=value pair, unknown
    attributes, their order and spelling are kept; an unchanged cookie is returned as given.

    - Domain (``rewrite``): every ``Domain`` attribute is dropped, making the cookie host-only
      on the proxy's host; ``localhost`` never domain-matches the upstream's domain, so the
      browser would ignore the cookie entirely (section 5.7, storage model).
    - Secure (``auto``): dropped when the proxy is served over http, since a Secure cookie from
      a non-secure origin is ignored (section 5.7). Chrome and Firefox exempt
      ``http://localhost``, Safari does not, and no browser exempts a LAN address or a
      docker-compose host name. ``Partitioned`` (CHIPS) is dropped with it: it requires Secure.
    - SameSite (``auto``): ``None`` on a cookie without Secure (after the rule above) is refused
      (section 5.7), so it becomes ``Lax``. Lax loses nothing here: the frontend on
      ``http://localhost:5173`` and the proxy on ``http://localhost:8080`` are same-site,
      because a site is scheme plus registrable domain and ports do not count (section 5.2,
      HTML Standard "same site"); Lax still sends the cookie on top-level navigations from
      other sites, such as an OAuth provider redirecting back, which Strict would not.
    - Path (``rewrite``): mapped from the upstream's path space to the proxy's, the inverse of
      the route's ``strip_prefix`` mapping: ``/v1/users`` -> ``/api/users``, ``/v1`` -> ``/api``.
      A path the route cannot reach (``/`` above the base ``/v1``, or outside the route's
      prefix) widens to the route prefix: the upstream meant "at least everything under the
      base", and the prefix is everything of the upstream this route reaches. Without a
      ``Path`` attribute the browser derives the default-path from the proxy's URL (section
      5.1.4), which already lands in the proxy's path space, so nothing is added.

    Prefixed names (``__Secure-`` needs Secure; ``__Host-`` needs Secure, ``Path=/`` and no
    Domain, section 4.1.3): when the rewritten cookie no longer keeps that promise (over http,
    or ``Path=/`` moved under ``/api``) the browser would refuse it. Keeping the promise by
    force (``Secure`` over http) cannot work, and a plain rename (``__Host-sid`` -> ``sid``)
    breaks the upstream, which reads back the name it set. So the name gets the
    ``corsproxy-`` marker (``corsproxy-__Host-sid``) and :func:`restore_cookie_prefixes`
    removes it from the ``Cookie`` request header on the way back. The mapping is stateless
    and reversible from the name alone: no table of renamed cookies to lose on a restart or
    reload, and the developer sees in devtools which cookies the proxy renamed.
    """
    parts = value.split(";")
    pair, attributes = parts[0], [part.strip() for part in parts[1:]]
    out: list[str] = []
    changed = False
    for attribute in attributes:
        name, _, attr_value = attribute.partition("=")
        key = name.strip().lower()
        attr_value = attr_value.strip()
        if key == "domain" and policy.domain == "rewrite":
            changed = True
            continue
        if key == "secure" and policy.secure == "auto" and not proxy_is_https:
            changed = True
            continue
        if key == "path" and policy.path == "rewrite" and attr_value.startswith("/"):
            # A value not starting with "/" is replaced by the default-path anyway (section 5.6.4).
            mapped = _cookie_path(attr_value, upstream_base_path, proxy_prefix, strip_prefix)
            if mapped != attr_value:
                attribute = f"{name.strip()}={mapped}"
                changed = True
        out.append(attribute)

    secure = any(_attribute_key(attribute) == "secure" for attribute in out)
    if not secure:
        # CHIPS (draft-cutler-httpbis-partitioned-cookies section 2.1): Partitioned requires
        # Secure, so a cookie that lost Secure keeps Partitioned only at the price of being refused.
        kept = [attribute for attribute in out if _attribute_key(attribute) != "partitioned"]
        changed = changed or len(kept) != len(out)
        out = kept
    out, samesite_changed = _samesite(out, policy.samesite, secure)
    changed = changed or samesite_changed

    cookie_name = pair.partition("=")[0].strip() if "=" in pair else ""
    if not _keeps_prefix_promise(cookie_name, out, secure):
        pair = pair.replace(cookie_name, RENAMED_PREFIX_MARKER + cookie_name, 1)
        changed = True

    if not changed:
        return value
    return "; ".join([pair.strip(), *(attribute for attribute in out if attribute)])


def restore_cookie_prefixes(cookie_header: str) -> str:
    """Undo the rename of :func:`rewrite_set_cookie` in one ``Cookie`` request header line.

    ``corsproxy-__Host-sid=abc; theme=dark`` -> ``__Host-sid=abc; theme=dark``. Only names
    the proxy produces (marker followed by a cookie prefix) are touched; everything else,
    including spacing, is passed through as sent (RFC 6265bis section 4.2.1: pairs are
    separated by ``"; "``, and a value never contains ``;``).
    """
    if RENAMED_PREFIX_MARKER not in cookie_header:
        return cookie_header
    pairs = cookie_header.split(";")
    for index, pair in enumerate(pairs):
        stripped = pair.lstrip()
        rest = stripped[len(RENAMED_PREFIX_MARKER) :]
        if stripped.startswith(RENAMED_PREFIX_MARKER) and rest.lower().startswith(
            (SECURE_PREFIX, HOST_PREFIX)
        ):
            pairs[index] = pair[: len(pair) - len(stripped)] + rest
    return ";".join(pairs)


def rewrite_location(
    location: str,
    *,
    upstream_base: URL,
    proxy_base: URL,
    proxy_prefix: str,
    strip_prefix: bool,
) -> str | None:
    """The ``Location`` a browser talking to the proxy should follow, or None to keep it.

    ``upstream_base`` is the route's upstream URL (``https://api.example.com/v1``);
    ``proxy_base`` is scheme://host[:port] as the browser addressed the proxy.

    ``Location`` is a URI reference resolved against the target URI (RFC 9110 section 10.2.2),
    which for the upstream is its own URL:

    - absolute or scheme-relative (``//host/...``, which takes the upstream's scheme), same
      origin as the upstream (default ports made explicit, so ``:443`` on https is the same
      origin) and under its base path: rewritten to the proxy's absolute URL with the route
      prefix put back, query and fragment kept byte for byte;
    - another origin (an OAuth provider, a CDN) or a path the route cannot reach: unchanged;
    - path-absolute (``/v1/login``): mapped to ``/api/login`` and kept relative, so the
      browser resolves it against the proxy. One the route cannot reach (``/other`` above the
      base ``/v1``) would resolve to a wrong path on the proxy, so it is made absolute on the
      upstream, which is where the upstream meant to send the browser;
    - relative paths (``login``, ``../x``), ``?query`` and ``#fragment``: unchanged, since the
      route mapping only swaps a leading prefix they resolve alike on both sides.
    """
    base_path = upstream_base.raw_path.rstrip("/")
    if location.startswith("//") or _has_scheme(location):
        absolute = f"{upstream_base.scheme}:{location}" if location.startswith("//") else location
        if origin_of(absolute) != origin_of(str(upstream_base)):
            return None
        split = urlsplit(absolute)
        after_authority = absolute[absolute.index("//") + 2 + len(split.netloc) :]
        path, tail = _split_path(after_authority)
        mapped = _proxy_path(path or "/", base_path, proxy_prefix, strip_prefix)
        if mapped is None:
            return None
        return f"{_origin_text(proxy_base)}{mapped}{tail}"
    if location.startswith("/"):
        path, tail = _split_path(location)
        mapped = _proxy_path(path, base_path, proxy_prefix, strip_prefix)
        if mapped is None:
            return f"{_origin_text(upstream_base)}{location}"
        return None if mapped == path else mapped + tail
    return None


def _proxy_path(upstream_path: str, base_path: str, prefix: str, strip_prefix: bool) -> str | None:
    """The proxy path whose route target is ``upstream_path``: the inverse of Route.target.

    None when no proxy path of this route reaches it: outside the upstream's base path, or,
    without strip_prefix, outside the route prefix."""
    base = base_path.rstrip("/")
    if base and upstream_path != base and not upstream_path.startswith(base + "/"):
        return None
    rest = upstream_path[len(base) :]
    prefix = prefix.rstrip("/")
    if not prefix:
        return rest or "/"
    if strip_prefix:
        return prefix + rest
    if rest == prefix or rest.startswith(prefix + "/"):
        return rest
    return None


def _cookie_path(path: str, base_path: str, prefix: str, strip_prefix: bool) -> str:
    route_prefix = prefix.rstrip("/") or "/"
    mapped = _proxy_path(path, base_path, prefix, strip_prefix)
    if mapped is None:
        return route_prefix
    # The upstream's root relative to the base ("/v1/" or "/" with no base) maps to "/api/",
    # which does not path-match "/api" itself (section 5.1.4); the prefix does, and nothing more.
    if mapped == route_prefix + "/":
        return route_prefix
    return mapped


def _samesite(attributes: list[str], setting: str, secure: bool) -> tuple[list[str], bool]:
    if setting == "keep":
        return attributes, False
    out: list[str] = []
    found = changed = False
    for attribute in attributes:
        name, _, current = attribute.partition("=")
        if name.strip().lower() != "samesite":
            out.append(attribute)
            continue
        found = True
        current = current.strip()
        if setting == "auto":
            wanted = "Lax" if current.lower() == "none" and not secure else current
        else:
            wanted = setting
        if wanted != current:
            attribute = f"{name.strip()}={wanted}"
            changed = True
        out.append(attribute)
    if not found and setting != "auto":
        out.append(f"SameSite={setting}")
        changed = True
    return out, changed


def _keeps_prefix_promise(cookie_name: str, attributes: list[str], secure: bool) -> bool:
    lower = cookie_name.lower()
    if lower.startswith(SECURE_PREFIX):
        return secure
    if lower.startswith(HOST_PREFIX):
        keys = [_attribute_key(attribute) for attribute in attributes]
        paths = [
            attribute.partition("=")[2].strip()
            for attribute in attributes
            if _attribute_key(attribute) == "path"
        ]
        # The last Path attribute is the one the browser uses (section 5.6, step 6).
        return secure and "domain" not in keys and bool(paths) and paths[-1] == "/"
    return True


def _attribute_key(attribute: str) -> str:
    return attribute.partition("=")[0].strip().lower()


def _has_scheme(reference: str) -> bool:
    # RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
    scheme, colon, _ = reference.partition(":")
    return (
        bool(colon)
        and bool(scheme)
        and scheme[0].isascii()
        and scheme[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "+-.") for c in scheme)
    )


def _split_path(reference: str) -> tuple[str, str]:
    """A path and the ``?query#fragment`` tail after it, both verbatim."""
    ends = [index for index in (reference.find("?"), reference.find("#")) if index >= 0]
    cut = min(ends, default=len(reference))
    return reference[:cut], reference[cut:]


def _origin_text(url: URL) -> str:
    return str(url.origin())
