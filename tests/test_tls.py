"""TLS on both sides, against real TLS servers on loopback. trustme plays the private CA
an internal upstream would use; the proxy's own certificate is the one auto_certificate makes."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corsproxy import create_app
from corsproxy.config.model import ConfigError
from corsproxy.tls import (
    auto_certificate,
    client_ssl_context,
    default_state_dir,
    generate_localhost_certificate,
    server_ssl_context,
    trust_instructions,
)
from tests.conftest import FRONT_DOOR, ProxyFactory, ProxyServerFactory, Upstream, config_from_yaml, loads

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Pki:
    """A throwaway CA and the files a route's ``tls:`` settings would point at."""

    ca: trustme.CA
    ca_file: str
    client_cert: str
    client_key: str
    client_combined: str


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    client = ca.issue_cert("client@example.test")
    client_cert, client_key = tmp_path / "client.crt", tmp_path / "client.key"
    combined = tmp_path / "both.pem"
    client.cert_chain_pems[0].write_to_path(client_cert)
    client.private_key_pem.write_to_path(client_key)
    client.private_key_and_cert_chain_pem.write_to_path(combined)
    return Pki(ca, str(ca_file), str(client_cert), str(client_key), str(combined))


def upstream_app() -> web.Application:
    async def whoami(request: web.Request) -> web.Response:
        # The client certificate the upstream saw, if any: proves mTLS really happened.
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        alt_names = [value for _, value in peer.get("subjectAltName", ())] if peer else []
        return web.json_response({"alt": alt_names})

    app = web.Application()
    app.router.add_get("/", whoami)
    return app


async def tls_server(
    aiohttp_server: ServerFactory, pki: Pki, *, require_client_cert: bool = False
) -> TestServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        pki.ca.configure_trust(context)
    return await aiohttp_server(upstream_app(), ssl=context)


async def fetch(server: TestServer, ssl_value: ssl.SSLContext | bool) -> dict[str, object]:
    url = server.make_url("/")
    assert url.scheme == "https"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ssl_value) as response:
        assert response.status == 200
        body: dict[str, object] = await response.json()
        return body


# ------------------------------------------------------------------------- upstream side


async def test_default_verification_rejects_a_private_ca(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki)
    assert client_ssl_context() is True
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fetch(server, client_ssl_context())


async def test_ca_file_makes_the_private_ca_trusted(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki)
    context = client_ssl_context(ca_file=pki.ca_file)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert await fetch(server, context) == {"alt": []}


async def test_ca_file_replaces_the_system_store(pki: Pki) -> None:
    context = client_ssl_context(ca_file=pki.ca_file)
    assert isinstance(context, ssl.SSLContext)
    # Only the route's CA: a public certificate would not verify on this route.
    assert context.cert_store_stats()["x509_ca"] == 1


async def test_ca_file_still_checks_the_hostname(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki)
    context = client_ssl_context(ca_file=pki.ca_file)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(server.make_url("/"), ssl=context, server_hostname="other.example")


async def test_verify_false_accepts_anything(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki)
    assert client_ssl_context(verify=False) is False
    assert await fetch(server, client_ssl_context(verify=False)) == {"alt": []}


async def test_mutual_tls_with_a_client_certificate(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    context = client_ssl_context(ca_file=pki.ca_file, client_cert=pki.client_cert, client_key=pki.client_key)
    body = await fetch(server, context)
    assert body["alt"] == ["client@example.test"]


async def test_mutual_tls_with_key_and_cert_in_one_file(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    context = client_ssl_context(ca_file=pki.ca_file, client_cert=pki.client_combined)
    assert (await fetch(server, context))["alt"] == ["client@example.test"]


async def test_client_certificate_without_verification(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    context = client_ssl_context(verify=False, client_cert=pki.client_cert, client_key=pki.client_key)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert (await fetch(server, context))["alt"] == ["client@example.test"]


async def test_mutual_tls_fails_without_a_client_certificate(aiohttp_server: ServerFactory, pki: Pki) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    # TLS 1.3 finishes the client's side of the handshake before the server checks for a
    # certificate, so the refusal surfaces as a dropped connection (or an SSL alert, an OSError),
    # not as a certificate error on the client's side.
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(server, client_ssl_context(ca_file=pki.ca_file))


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ca_file": "missing/ca.pem"}, "ca_file missing/ca.pem: cannot read: No such file or directory"),
        ({"client_cert": "missing/c.crt"}, "client_cert missing/c.crt: cannot read: No such file"),
        ({"client_key": "k.pem"}, "client_key is given without client_cert"),
        ({"verify": False, "ca_file": "ca.pem"}, "ca_file has no effect with verify: false"),
    ],
)
def test_client_setting_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        client_ssl_context(**settings)  # type: ignore[arg-type]


def test_missing_client_key_is_named(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.key")
    with pytest.raises(
        ValueError, match=f"^client_key {re.escape(missing)}: cannot read: No such file or directory$"
    ):
        client_ssl_context(client_cert=pki.client_cert, client_key=missing)


def test_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"^ca_file {re.escape(str(junk))}: not a PEM CA certificate"):
        client_ssl_context(ca_file=str(junk))


def test_ca_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory, expected a PEM file"):
        client_ssl_context(ca_file=str(tmp_path))


def test_key_that_does_not_match_the_certificate(pki: Pki, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    pki.ca.issue_cert("someone-else.test").private_key_pem.write_to_path(other)
    with pytest.raises(
        ValueError, match=f"client_key {re.escape(str(other))} does not belong to client_cert"
    ):
        client_ssl_context(client_cert=pki.client_cert, client_key=str(other))


def test_cert_without_a_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="must hold a PEM certificate followed by its private key"):
        client_ssl_context(client_cert=pki.client_cert)


def test_encrypted_key_is_refused_not_prompted_for(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(Path(pki.client_key).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="the key is encrypted; corsproxy needs an unencrypted PEM key"):
        client_ssl_context(client_cert=pki.client_cert, client_key=str(encrypted))


def test_server_setting_errors(tmp_path: Path) -> None:
    cert, key, _ = auto_certificate(tmp_path / "state")
    with pytest.raises(ValueError, match=r"^cert /nonexistent\.crt: cannot read: No such file or directory$"):
        server_ssl_context("/nonexistent.crt", key)
    with pytest.raises(ValueError, match=r"^key /nonexistent\.key: cannot read: No such file or directory$"):
        server_ssl_context(cert, "/nonexistent.key")


# ---------------------------------------------------------------------------- proxy side


def test_auto_certificate_is_created_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state" / "corsproxy"
    cert, key, created = auto_certificate(state)
    assert created
    assert (cert, key) == (state / "localhost.crt", state / "localhost.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    cert_bytes, key_bytes = cert.read_bytes(), key.read_bytes()

    assert auto_certificate(state) == (cert, key, False)
    assert (cert.read_bytes(), key.read_bytes()) == (cert_bytes, key_bytes)
    assert sorted(path.name for path in state.iterdir()) == ["localhost.crt", "localhost.key"]


@pytest.mark.parametrize("lost", ["localhost.crt", "localhost.key"])
def test_auto_certificate_is_made_again_when_a_file_is_lost(tmp_path: Path, lost: str) -> None:
    cert, key, _ = auto_certificate(tmp_path)
    before = cert.read_bytes()
    (tmp_path / lost).unlink()
    assert auto_certificate(tmp_path) == (cert, key, True)
    assert cert.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_auto_certificate_is_made_again_when_expired(tmp_path: Path) -> None:
    cert, key, _ = auto_certificate(tmp_path)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    old_cert, old_key = generate_localhost_certificate(now=long_ago)
    cert.write_bytes(old_cert)
    key.write_bytes(old_key)
    assert auto_certificate(tmp_path)[2] is True
    assert x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc > datetime.datetime.now(
        datetime.UTC
    ) + datetime.timedelta(days=300)


def test_auto_certificate_is_made_again_when_the_pair_does_not_match(tmp_path: Path) -> None:
    _, key, _ = auto_certificate(tmp_path)
    other_key = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert auto_certificate(tmp_path)[2] is True


def test_auto_certificate_contents(tmp_path: Path) -> None:
    cert_path, _, _ = auto_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=360) < lifetime < datetime.timedelta(days=398)
    assert cert.issuer == cert.subject


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
async def test_auto_certificate_serves_https_to_a_client_trusting_it(
    aiohttp_server: ServerFactory, tmp_path: Path, hostname: str
) -> None:
    cert, key, _ = auto_certificate(tmp_path)
    server = await aiohttp_server(upstream_app(), ssl=server_ssl_context(cert, key))
    trusting = ssl.create_default_context(cafile=str(cert))
    # Python 3.13 turns strict X.509 checking on by default; the certificate must pass it.
    trusting.verify_flags |= ssl.VERIFY_X509_STRICT
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.make_url("/"), ssl=trusting, server_hostname=hostname)
        assert response.status == 200
        response.release()
        # And a client that does not trust it is refused: the certificate is not a free pass.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(server.make_url("/"), ssl=True)


def test_default_state_dir(tmp_path: Path) -> None:
    assert default_state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "corsproxy"
    home_default = Path.home() / ".local" / "state" / "corsproxy"
    assert default_state_dir({}) == home_default
    # The XDG spec: a relative value is invalid and ignored.
    assert default_state_dir({"XDG_STATE_HOME": "relative/state"}) == home_default


def test_trust_instructions_quote_the_path() -> None:
    text = trust_instructions(Path("/home/me/my state/localhost.crt"))
    quoted = "'/home/me/my state/localhost.crt'"
    assert f"sudo cp {quoted} /usr/local/share/ca-certificates/corsproxy-localhost.crt" in text
    assert "sudo update-ca-certificates" in text
    assert f"security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {quoted}" in text
    assert f'certutil -d sql:$HOME/.pki/nssdb -A -t "P,," -n corsproxy-localhost -i {quoted}' in text
    assert f"NODE_EXTRA_CA_CERTS={quoted}" in text


# ------------------------------------------------------------- through the real proxy

LOCAL = "http://localhost:5173"


def proxy_config(upstream_url: str, tls: str = "") -> str:
    return f"""
routes:
  - path: /
    upstream: {upstream_url}
{tls}
rules:
  - origins: ["{LOCAL}"]
"""


async def test_proxy_refuses_an_untrusted_upstream_with_a_readable_502(
    aiohttp_server: ServerFactory, pki: Pki, make_proxy: ProxyFactory
) -> None:
    server = await tls_server(aiohttp_server, pki)
    client = await make_proxy(proxy_config(str(server.make_url("")).rstrip("/")))
    response = await client.get("/", headers={"Origin": LOCAL})
    assert response.status == 502
    assert "certificate verify failed" in await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


@pytest.mark.parametrize("tls", ["ca_file", "verify_false"])
async def test_proxy_reaches_a_private_ca_upstream(
    aiohttp_server: ServerFactory, pki: Pki, make_proxy: ProxyFactory, tls: str
) -> None:
    server = await tls_server(aiohttp_server, pki)
    settings = f"ca_file: {pki.ca_file}" if tls == "ca_file" else "verify: false"
    client = await make_proxy(
        proxy_config(str(server.make_url("")).rstrip("/"), f"    tls:\n      {settings}")
    )
    response = await client.get("/", headers={"Origin": LOCAL})
    assert response.status == 200
    assert loads(await response.read()) == {"alt": []}


async def test_proxy_without_the_client_certificate_is_a_502(
    aiohttp_server: ServerFactory, pki: Pki, make_proxy: ProxyFactory
) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    client = await make_proxy(
        proxy_config(str(server.make_url("")).rstrip("/"), f"    tls:\n      ca_file: {pki.ca_file}")
    )
    response = await client.get("/", headers={"Origin": LOCAL})
    assert response.status == 502
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL


async def test_proxy_served_over_https_with_the_auto_certificate(
    proxy_server: ProxyServerFactory, upstream: Upstream, tmp_path: Path
) -> None:
    cert, key, _ = auto_certificate(tmp_path)
    app = create_app(config_from_yaml(proxy_config(upstream.url)))
    proxy = await proxy_server(app, ssl=server_ssl_context(cert, key))
    trusting = ssl.create_default_context(cafile=str(cert))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            proxy.make_url("/hello"), ssl=trusting, server_hostname="localhost", headers={"Origin": LOCAL}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == LOCAL
    # The upstream learns the browser spoke HTTPS to the proxy.
    assert upstream.received[-1].headers["X-Forwarded-Proto"] == "https"


def test_a_key_that_does_not_match_is_a_config_error_with_its_line(pki: Pki, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    pki.ca.issue_cert("someone-else.test").private_key_pem.write_to_path(other)
    tls = f"    tls:\n      client_cert: {pki.client_cert}\n      client_key: {other}"
    with pytest.raises(ConfigError) as caught:
        config_from_yaml(proxy_config("https://127.0.0.1:1", tls))
    assert len(caught.value.errors) == 1
    error = caught.value.errors[0]
    assert "routes[0].tls" in error
    assert f"client_key {other} does not belong to client_cert {pki.client_cert}" in error


def test_ca_file_with_verify_false_is_a_config_error(pki: Pki) -> None:
    tls = f"    tls:\n      verify: false\n      ca_file: {pki.ca_file}"
    with pytest.raises(ConfigError, match="ca_file has no effect with verify: false"):
        config_from_yaml(proxy_config("https://127.0.0.1:1", tls))


@pytest.mark.parametrize(
    ("method", "body", "served_by_front_door"),
    [
        pytest.param("GET", None, 1, id="a GET, by the front door's client"),
        pytest.param("GET", b"hello", 0, id="a GET with a body, by aiohttp's client"),
    ],
)
async def test_both_clients_present_the_route_tls_settings(
    aiohttp_server: ServerFactory,
    pki: Pki,
    make_proxy: ProxyFactory,
    transport: str,
    method: str,
    body: bytes | None,
    served_by_front_door: int,
) -> None:
    server = await tls_server(aiohttp_server, pki, require_client_cert=True)
    tls = (
        f"    tls:\n      ca_file: {pki.ca_file}\n"
        f"      client_cert: {pki.client_cert}\n      client_key: {pki.client_key}"
    )
    client = await make_proxy(proxy_config(str(server.make_url("")).rstrip("/"), tls))
    response = await client.request(method, "/", data=body, headers={"Origin": LOCAL})
    assert response.status == 200
    assert loads(await response.read()) == {"alt": ["client@example.test"]}
    health = await (await client.get("/__corsproxy/health")).json()
    assert health["front_door"]["served"] == (served_by_front_door if transport == FRONT_DOOR else 0)
