"""Cookie and redirect rewriting as pure functions: tables of upstream header -> what the browser gets."""

from __future__ import annotations

import pytest
from yarl import URL

from corsproxy.upstream.rewrite import (
    CookiePolicy,
    restore_cookie_prefixes,
    rewrite_location,
    rewrite_set_cookie,
)

DEFAULT = CookiePolicy()
KEEP_ALL = CookiePolicy(domain="keep", secure="keep", samesite="keep", path="keep")
EXPIRES = "Expires=Wed, 21 Oct 2015 07:28:00 GMT"

# The usual layout: http://localhost:8080/api/... -> https://api.example.com/v1/...
API = {"upstream_base_path": "/v1", "proxy_prefix": "/api", "strip_prefix": True}
ROOT = {"upstream_base_path": "", "proxy_prefix": "/", "strip_prefix": True}
NO_BASE = {"upstream_base_path": "", "proxy_prefix": "/api", "strip_prefix": True}
NO_STRIP = {"upstream_base_path": "/v1", "proxy_prefix": "/api", "strip_prefix": False}


@pytest.mark.parametrize(
    ("set_cookie", "policy", "https", "layout", "wanted"),
    [
        pytest.param(
            "sid=abc; Domain=example.com; HttpOnly",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; HttpOnly",
            id="Domain is dropped so the cookie belongs to the proxy's host",
        ),
        pytest.param(
            "sid=abc; domain=.example.com; Domain=api.example.com",
            DEFAULT,
            True,
            ROOT,
            "sid=abc",
            id="every Domain attribute is dropped whatever its case",
        ),
        pytest.param(
            "sid=abc; Domain=localhost",
            CookiePolicy(domain="keep"),
            False,
            ROOT,
            "sid=abc; Domain=localhost",
            id="Domain is kept when the policy says keep",
        ),
        pytest.param(
            "sid=abc; Secure; HttpOnly",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; HttpOnly",
            id="Secure is dropped when the proxy is served over http",
        ),
        pytest.param(
            "sid=abc; Secure; HttpOnly",
            DEFAULT,
            True,
            ROOT,
            "sid=abc; Secure; HttpOnly",
            id="Secure is kept when the proxy is served over https",
        ),
        pytest.param(
            "sid=abc; Secure",
            CookiePolicy(secure="keep"),
            False,
            ROOT,
            "sid=abc; Secure",
            id="Secure is kept over http when the policy says keep",
        ),
        pytest.param(
            "sid=abc; Secure; SameSite=None",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; SameSite=Lax",
            id="SameSite=None becomes Lax over http because None needs Secure",
        ),
        pytest.param(
            "sid=abc; Secure; SameSite=None",
            DEFAULT,
            True,
            ROOT,
            "sid=abc; Secure; SameSite=None",
            id="SameSite=None stays over https where Secure stays",
        ),
        pytest.param(
            "sid=abc; Secure; SameSite=None",
            CookiePolicy(secure="keep"),
            False,
            ROOT,
            "sid=abc; Secure; SameSite=None",
            id="SameSite=None stays when Secure is kept even over http",
        ),
        pytest.param(
            "sid=abc; SameSite=None",
            DEFAULT,
            True,
            ROOT,
            "sid=abc; SameSite=Lax",
            id="SameSite=None without Secure from the upstream itself becomes Lax",
        ),
        pytest.param(
            "sid=abc; Secure; SameSite=None",
            CookiePolicy(samesite="keep"),
            False,
            ROOT,
            "sid=abc; SameSite=None",
            id="SameSite is left alone when the policy says keep",
        ),
        pytest.param(
            "sid=abc; SameSite=Strict",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; SameSite=Strict",
            id="SameSite Strict and Lax are never touched in auto mode",
        ),
        pytest.param(
            "sid=abc; samesite=lax",
            CookiePolicy(samesite="Strict"),
            False,
            ROOT,
            "sid=abc; samesite=Strict",
            id="an explicit SameSite replaces the upstream's value",
        ),
        pytest.param(
            "sid=abc; HttpOnly",
            CookiePolicy(samesite="Lax"),
            False,
            ROOT,
            "sid=abc; HttpOnly; SameSite=Lax",
            id="an explicit SameSite is appended when the upstream sent none",
        ),
        pytest.param(
            "sid=abc; Secure; Partitioned; SameSite=None",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; SameSite=Lax",
            id="Partitioned goes with Secure because it requires Secure",
        ),
        pytest.param(
            "sid=abc; Secure; Partitioned; SameSite=None",
            DEFAULT,
            True,
            ROOT,
            "sid=abc; Secure; Partitioned; SameSite=None",
            id="Partitioned stays over https",
        ),
        pytest.param(
            "__Host-sid=abc; Secure; Path=/; HttpOnly",
            DEFAULT,
            False,
            ROOT,
            "corsproxy-__Host-sid=abc; Path=/; HttpOnly",
            id="a __Host- cookie that lost Secure over http is renamed with the marker",
        ),
        pytest.param(
            "__Host-sid=abc; Secure; Path=/",
            DEFAULT,
            True,
            ROOT,
            "__Host-sid=abc; Secure; Path=/",
            id="a __Host- cookie over https at the proxy root keeps its name",
        ),
        pytest.param(
            "__Host-sid=abc; Secure; Path=/",
            DEFAULT,
            True,
            API,
            "corsproxy-__Host-sid=abc; Secure; Path=/api",
            id="a __Host- cookie whose Path moves under the route prefix is renamed even over https",
        ),
        pytest.param(
            "__host-sid=abc; Secure; Path=/",
            DEFAULT,
            False,
            ROOT,
            "corsproxy-__host-sid=abc; Path=/",
            id="the __Host- prefix is recognised whatever its case",
        ),
        pytest.param(
            "__Secure-token=xyz; Secure; Path=/v1",
            DEFAULT,
            False,
            API,
            "corsproxy-__Secure-token=xyz; Path=/api",
            id="a __Secure- cookie that lost Secure over http is renamed with the marker",
        ),
        pytest.param(
            "__Secure-token=xyz; Secure; Path=/v1",
            DEFAULT,
            True,
            API,
            "__Secure-token=xyz; Secure; Path=/api",
            id="a __Secure- cookie over https keeps its name even when its Path moves",
        ),
        pytest.param(
            "__Host-sid=abc; Secure; Path=/",
            KEEP_ALL,
            False,
            API,
            "__Host-sid=abc; Secure; Path=/",
            id="a __Host- cookie is untouched when the policy keeps everything",
        ),
        pytest.param(
            "sid=abc; Path=/v1/users",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=/api/users",
            id="a Path under the upstream base maps under the route prefix",
        ),
        pytest.param(
            "sid=abc; Path=/v1",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=/api",
            id="a Path equal to the upstream base maps to the route prefix",
        ),
        pytest.param(
            "sid=abc; Path=/v1/",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=/api",
            id="the base with a trailing slash maps to the prefix so the prefix itself matches",
        ),
        pytest.param(
            "sid=abc; Path=/",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=/api",
            id="the upstream root above the base widens to the route prefix",
        ),
        pytest.param(
            "sid=abc; Path=/v2/other",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=/api",
            id="a Path outside the upstream base maps to the route prefix",
        ),
        pytest.param(
            "sid=abc; Path=/",
            DEFAULT,
            False,
            NO_BASE,
            "sid=abc; Path=/api",
            id="the upstream root with no base maps to the route prefix",
        ),
        pytest.param(
            "sid=abc; Path=/users/",
            DEFAULT,
            False,
            NO_BASE,
            "sid=abc; Path=/api/users/",
            id="a trailing slash below the root is kept because it narrows path-match",
        ),
        pytest.param(
            "sid=abc; Path=/v1/api/users",
            DEFAULT,
            False,
            NO_STRIP,
            "sid=abc; Path=/api/users",
            id="without strip_prefix only the upstream base is taken off",
        ),
        pytest.param(
            "sid=abc; Path=/v1",
            DEFAULT,
            False,
            NO_STRIP,
            "sid=abc; Path=/api",
            id="without strip_prefix a Path above the route prefix widens to the prefix",
        ),
        pytest.param(
            "sid=abc; Path=/v1/users",
            CookiePolicy(path="keep"),
            False,
            API,
            "sid=abc; Path=/v1/users",
            id="Path is kept when the policy says keep",
        ),
        pytest.param(
            "sid=abc; Path=/users; HttpOnly",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; Path=/users; HttpOnly",
            id="nothing changes with prefix / and no upstream base",
        ),
        pytest.param(
            "sid=abc; Path=users",
            DEFAULT,
            False,
            API,
            "sid=abc; Path=users",
            id="a Path not starting with a slash is left for the browser's default-path",
        ),
        pytest.param(
            "sid=abc; HttpOnly",
            DEFAULT,
            False,
            API,
            "sid=abc; HttpOnly",
            id="a cookie without Path gets none added",
        ),
        pytest.param(
            f"sid=abc; {EXPIRES}; Domain=example.com; Path=/v1",
            DEFAULT,
            False,
            API,
            f"sid=abc; {EXPIRES}; Path=/api",
            id="an Expires date with a comma survives intact",
        ),
        pytest.param(
            "sid=abc; SECURE; DOMAIN=example.com; PATH=/v1/x; SAMESITE=NONE",
            DEFAULT,
            False,
            API,
            "sid=abc; PATH=/api/x; SAMESITE=Lax",
            id="attribute names are case-insensitive and keep their spelling",
        ),
        pytest.param(
            "sid=abc; Max-Age=60; Priority=High; Secure; X-Custom=1; HttpOnly",
            DEFAULT,
            False,
            ROOT,
            "sid=abc; Max-Age=60; Priority=High; X-Custom=1; HttpOnly",
            id="unknown attributes are kept in their order",
        ),
        pytest.param(
            "data=a=b=c; Secure",
            DEFAULT,
            False,
            ROOT,
            "data=a=b=c",
            id="a value containing equals signs is kept whole",
        ),
        pytest.param(
            "sid=abc;Secure;HttpOnly",
            DEFAULT,
            True,
            API,
            "sid=abc;Secure;HttpOnly",
            id="a cookie needing no change is returned byte for byte",
        ),
    ],
)
def test_rewrite_set_cookie(
    set_cookie: str, policy: CookiePolicy, https: bool, layout: dict[str, object], wanted: str
) -> None:
    got = rewrite_set_cookie(
        set_cookie,
        policy,
        proxy_is_https=https,
        upstream_base_path=str(layout["upstream_base_path"]),
        proxy_prefix=str(layout["proxy_prefix"]),
        strip_prefix=bool(layout["strip_prefix"]),
    )
    assert got == wanted


@pytest.mark.parametrize(
    ("cookie", "wanted"),
    [
        pytest.param(
            "corsproxy-__Host-sid=abc; theme=dark",
            "__Host-sid=abc; theme=dark",
            id="a renamed __Host- cookie gets its name back",
        ),
        pytest.param(
            "theme=dark;  corsproxy-__Secure-token=xyz",
            "theme=dark;  __Secure-token=xyz",
            id="a renamed __Secure- cookie gets its name back and the spacing is kept",
        ),
        pytest.param(
            "corsproxy-theme=dark; corsproxy-=1",
            "corsproxy-theme=dark; corsproxy-=1",
            id="names with the marker but no cookie prefix are not the proxy's and stay",
        ),
        pytest.param(
            "a=1; b=corsproxy-__Host-x",
            "a=1; b=corsproxy-__Host-x",
            id="the marker inside a value is left alone",
        ),
        pytest.param("", "", id="an empty header stays empty"),
    ],
)
def test_restore_cookie_prefixes(cookie: str, wanted: str) -> None:
    assert restore_cookie_prefixes(cookie) == wanted


@pytest.mark.parametrize(
    "set_cookie",
    [
        pytest.param("__Host-sid=abc; Secure; Path=/", id="a __Host- cookie"),
        pytest.param("__Secure-token=xyz; Secure; Path=/v1", id="a __Secure- cookie"),
    ],
)
def test_a_renamed_cookie_reaches_the_upstream_under_its_own_name(set_cookie: str) -> None:
    stored = rewrite_set_cookie(
        set_cookie,
        DEFAULT,
        proxy_is_https=False,
        upstream_base_path="/v1",
        proxy_prefix="/api",
        strip_prefix=True,
    )
    pair = stored.split(";")[0]
    assert restore_cookie_prefixes(f"other=1; {pair}") == f"other=1; {set_cookie.split(';')[0]}"


def test_cookie_policy_defaults_fix_cookies_for_http_localhost() -> None:
    assert CookiePolicy() == CookiePolicy(domain="rewrite", secure="auto", samesite="auto", path="rewrite")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"domain": "drop"}, id="an unknown domain setting is refused"),
        pytest.param({"secure": "never"}, id="an unknown secure setting is refused"),
        pytest.param({"samesite": "lax"}, id="an explicit SameSite must be spelled Lax, Strict or None"),
        pytest.param({"path": "strip"}, id="an unknown path setting is refused"),
    ],
)
def test_cookie_policy_refuses_unknown_settings(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        CookiePolicy(**fields)


UPSTREAM = URL("https://api.example.com/v1")
PROXY = URL("http://localhost:8080")


@pytest.mark.parametrize(
    ("location", "upstream", "prefix", "strip", "wanted"),
    [
        pytest.param(
            "https://api.example.com/v1/login",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api/login",
            id="an absolute Location on the upstream comes back through the proxy",
        ),
        pytest.param(
            "https://api.example.com/v1",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api",
            id="the upstream base itself maps to the route prefix",
        ),
        pytest.param(
            "https://api.example.com/v1/search?q=a%20b&page=2#results",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api/search?q=a%20b&page=2#results",
            id="the query and fragment are kept byte for byte",
        ),
        pytest.param(
            "//api.example.com/v1/login",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api/login",
            id="a scheme-relative Location takes the upstream's scheme and comes back",
        ),
        pytest.param(
            "https://api.example.com:443/v1/x",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api/x",
            id="the default port written out is still the upstream's origin",
        ),
        pytest.param(
            "HTTPS://API.Example.COM/v1/x",
            UPSTREAM,
            "/api",
            True,
            "http://localhost:8080/api/x",
            id="scheme and host compare case-insensitively",
        ),
        pytest.param(
            "https://api.example.com",
            URL("https://api.example.com"),
            "/api",
            True,
            "http://localhost:8080/api/",
            id="an upstream origin with no path maps to the route prefix",
        ),
        pytest.param(
            "https://api.example.com?next=1",
            URL("https://api.example.com"),
            "/",
            True,
            "http://localhost:8080/?next=1",
            id="an empty path is the root and the query is kept",
        ),
        pytest.param(
            "http://api.example.com/v1/x",
            UPSTREAM,
            "/api",
            True,
            None,
            id="another scheme is another origin and is kept",
        ),
        pytest.param(
            "https://api.example.com:8443/v1/x",
            UPSTREAM,
            "/api",
            True,
            None,
            id="another port is another origin and is kept",
        ),
        pytest.param(
            "https://accounts.google.com/o/oauth2/auth?redirect_uri=https://api.example.com/v1/cb",
            UPSTREAM,
            "/api",
            True,
            None,
            id="another site such as an OAuth provider is kept",
        ),
        pytest.param(
            "https://api.example.com/v2/x",
            UPSTREAM,
            "/api",
            True,
            None,
            id="an absolute Location outside the upstream base is kept",
        ),
        pytest.param(
            "https://api.example.com/v10/x",
            UPSTREAM,
            "/api",
            True,
            None,
            id="the base path matches whole segments only",
        ),
        pytest.param(
            "/v1/login?next=%2Fhome",
            UPSTREAM,
            "/api",
            True,
            "/api/login?next=%2Fhome",
            id="a path-absolute Location under the base is mapped and stays relative",
        ),
        pytest.param(
            "/v2/login",
            UPSTREAM,
            "/api",
            True,
            "https://api.example.com/v2/login",
            id="a path-absolute Location the route cannot reach is made absolute on the upstream",
        ),
        pytest.param(
            "/login",
            URL("https://api.example.com"),
            "/",
            True,
            None,
            id="a path-absolute Location needs no change with prefix / and no base",
        ),
        pytest.param(
            "https://api.example.com/x",
            URL("https://api.example.com"),
            "/",
            True,
            "http://localhost:8080/x",
            id="an absolute Location with prefix / and no base points at the proxy",
        ),
        pytest.param(
            "https://api.example.com/v1/api/users",
            UPSTREAM,
            "/api",
            False,
            "http://localhost:8080/api/users",
            id="without strip_prefix only the upstream base is taken off",
        ),
        pytest.param(
            "https://api.example.com/v1/other",
            UPSTREAM,
            "/api",
            False,
            None,
            id="without strip_prefix a path outside the route prefix is kept",
        ),
        pytest.param(
            "login?x=1",
            UPSTREAM,
            "/api",
            True,
            None,
            id="a relative path resolves alike on both sides and is kept",
        ),
        pytest.param("?page=2", UPSTREAM, "/api", True, None, id="a query-only Location is kept"),
        pytest.param(
            "mailto:ops@example.com",
            UPSTREAM,
            "/api",
            True,
            None,
            id="a non-http scheme is another origin and is kept",
        ),
    ],
)
def test_rewrite_location(location: str, upstream: URL, prefix: str, strip: bool, wanted: str | None) -> None:
    got = rewrite_location(
        location, upstream_base=upstream, proxy_base=PROXY, proxy_prefix=prefix, strip_prefix=strip
    )
    assert got == wanted


def test_rewrite_location_uses_the_proxy_origin_the_browser_used() -> None:
    got = rewrite_location(
        "https://api.example.com/v1/x",
        upstream_base=UPSTREAM,
        proxy_base=URL("https://[::1]:8443"),
        proxy_prefix="/api",
        strip_prefix=True,
    )
    assert got == "https://[::1]:8443/api/x"
