"""TLS on both sides of the proxy.

Upstream side: ``client_ssl_context`` turns a route's ``tls:`` settings into the value
aiohttp takes as ``ssl=`` (True, False or an SSLContext). Proxy side: ``server_ssl_context``
for a certificate the user brings, and ``auto_certificate`` for a self-signed localhost
certificate generated once and kept in the state directory, so the browser only has to be
told to trust it once.

Every problem with a file raises ValueError with a message naming the setting and the
path; the config loader adds the line number.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import os
import shlex
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from cryptography import x509

CERT_NAME = "localhost.crt"
KEY_NAME = "localhost.key"
# Under one year: stays inside every browser's cap on certificate lifetime (398 days).
VALIDITY = datetime.timedelta(days=365)
# Tolerate a clock that is slightly behind when the certificate is first used.
BACKDATE = datetime.timedelta(hours=1)
# A certificate this close to expiry is replaced before a session, not during one.
RENEW_BEFORE = datetime.timedelta(days=1)
LOCALHOST_DNS = ("localhost",)
LOCALHOST_IPS = ("127.0.0.1", "::1")


# ---------------------------------------------------------------------------- upstream


def client_ssl_context(
    verify: bool = True,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext | bool:
    """The ``ssl=`` value for requests to one upstream.

    True: aiohttp's own verified default context (system trust store); nothing to build.
    False: no verification at all. An SSLContext when a CA file or a client certificate
    is given. ``ca_file`` replaces the system trust store for this route, like
    ``curl --cacert``: the route talks to one upstream, so only its CA is needed.
    ``client_key`` may be omitted when ``client_cert`` holds the key as well.
    """
    if ca_file is not None and not verify:
        raise ValueError("ca_file has no effect with verify: false; remove one of them")
    if client_key is not None and client_cert is None:
        raise ValueError("client_key is given without client_cert")
    if ca_file is None and client_cert is None:
        return verify

    if ca_file is not None:
        _readable("ca_file", ca_file)
        # With a cafile, create_default_context loads only that file, not the system store.
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        except ssl.SSLError as error:
            raise ValueError(f"ca_file {ca_file}: not a PEM CA certificate ({error})") from error
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        _load_chain(context, client_cert, client_key, "client_cert", "client_key")
    return context


@functools.cache
def _plain_client_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connection_context(value: ssl.SSLContext | bool) -> ssl.SSLContext:
    """An ``ssl=`` value from ``client_ssl_context`` as the context a plain
    ``create_connection`` needs (the front door's client, upstream_pool.py): the same
    verified system default aiohttp uses for True, no verification for False."""
    return value if isinstance(value, ssl.SSLContext) else _plain_client_context(value)


# ------------------------------------------------------------------------------- server


def server_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """The listening socket's context for a certificate and key in PEM files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # aiohttp's server speaks HTTP/1.1 only; saying so lets clients skip an h2 attempt.
    context.set_alpn_protocols(["http/1.1"])
    _load_chain(context, os.fspath(cert), os.fspath(key), "cert", "key")
    return context


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/corsproxy``, else ``~/.local/state/corsproxy``."""
    environ = os.environ if env is None else env
    state_home = environ.get("XDG_STATE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if state_home and os.path.isabs(state_home):
        return Path(state_home) / "corsproxy"
    return Path.home() / ".local" / "state" / "corsproxy"


def auto_certificate(state_dir: Path) -> tuple[Path, Path, bool]:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1: ``(cert, key, created)``.

    Reused when both files exist, belong together, name exactly those hosts and are not
    about to expire, because every new certificate has to be trusted again. Otherwise a
    new one is written; ``created`` tells the caller to print ``trust_instructions``.
    """
    _require_cryptography()
    cert_path, key_path = state_dir / CERT_NAME, state_dir / KEY_NAME
    if _reusable(cert_path, key_path):
        return cert_path, key_path, False
    cert_pem, key_pem = generate_localhost_certificate()
    try:
        # Private to the user: the key can impersonate localhost to a browser trusting it.
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Key first: if we stop in between, the pair does not match and is made again.
        _write_atomically(key_path, key_pem, 0o600)
        _write_atomically(cert_path, cert_pem, 0o644)
    except OSError as error:
        raise ValueError(
            f"cannot write the localhost certificate to {state_dir}: {error.strerror or error}"
        ) from error
    return cert_path, key_path, True


def generate_localhost_certificate(
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """PEM certificate and PKCS#8 key: EC P-256, a leaf (CA:FALSE) for serverAuth only."""
    _require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    # P-256: accepted by every browser and TLS stack, and far faster to make than RSA.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corsproxy development certificate"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(host) for host in LOCALHOST_DNS]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOCALHOST_IPS]
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        # Browsers match names against the SAN only; the CN is for humans.
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # A leaf, not a CA: trusting it cannot let anything else be signed in its name.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Key identifiers: OpenSSL's strict mode (Python 3.13's default) wants them.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def trust_instructions(cert: Path) -> str:
    """How to make browsers and tools trust the generated certificate, per platform."""
    path = shlex.quote(str(cert))
    return "\n".join(
        [
            f"corsproxy made a self-signed certificate for localhost: {cert}",
            "Browsers will warn until you trust it once (it is reused until it expires):",
            "  Debian/Ubuntu (system store, curl, most tools):",
            f"    sudo cp {path} /usr/local/share/ca-certificates/corsproxy-localhost.crt"
            " && sudo update-ca-certificates",
            "  macOS (Safari, Chrome):",
            "    sudo security add-trusted-cert -d -r trustRoot"
            f" -k /Library/Keychains/System.keychain {path}",
            "  Chrome/Chromium on Linux (NSS database; certutil is in libnss3-tools):",
            f'    certutil -d sql:$HOME/.pki/nssdb -A -t "P,," -n corsproxy-localhost -i {path}',
            # Firefox keeps its own store per profile; an exception is the one-click route.
            "  Firefox: open the proxy's https:// address once, Advanced > Accept the Risk and Continue",
            "  Node.js (ignores the system store):",
            f"    export NODE_EXTRA_CA_CERTS={path}",
        ]
    )


# ------------------------------------------------------------------------------ helpers


def _refuse_password() -> NoReturn:
    # Without a callback OpenSSL would prompt on the terminal and block the server start.
    raise ValueError("the key is encrypted; corsproxy needs an unencrypted PEM key")


def _load_chain(
    context: ssl.SSLContext, cert: str, key: str | None, cert_setting: str, key_setting: str
) -> None:
    for setting, path in ((cert_setting, cert), (key_setting, key)):
        if path is not None:
            _readable(setting, path)
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except ValueError as error:
        raise ValueError(f"{key_setting} {key or cert}: {error}") from error
    except ssl.SSLError as error:
        reason = error.reason or ""
        if "KEY_VALUES_MISMATCH" in reason:
            raise ValueError(f"{key_setting} {key} does not belong to {cert_setting} {cert}") from error
        if key is None:
            detail = "must hold a PEM certificate followed by its private key (or give the key separately)"
            raise ValueError(f"{cert_setting} {cert}: {detail}") from error
        raise ValueError(
            f"{cert_setting} {cert} / {key_setting} {key}: not a PEM certificate and private key ({error})"
        ) from error


def _readable(setting: str, path: str) -> None:
    """Open the file ourselves first: OpenSSL's errors do not say which file was missing."""
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        raise ValueError(f"{setting} {path}: is a directory, expected a PEM file") from None
    except OSError as error:
        raise ValueError(f"{setting} {path}: cannot read: {error.strerror or error}") from error


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Readers see the old file or the new one, never half; the key is never world-readable,
    not even for a moment, because the mode is set at creation."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)  # the umask may have narrowed it at creation
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _reusable(cert_path: Path, key_path: Path) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        # Missing, unreadable, damaged or encrypted: make a new pair.
        return False
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - RENEW_BEFORE:
        return False
    if cert.public_key() != key.public_key():
        return False
    return _names(cert) == _expected_names()


def _names(cert: x509.Certificate) -> set[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = {f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)}
    return dns | {f"IP:{address}" for address in san.get_values_for_type(x509.IPAddress)}


def _expected_names() -> set[str]:
    return {f"DNS:{host}" for host in LOCALHOST_DNS} | {
        f"IP:{ipaddress.ip_address(ip)}" for ip in LOCALHOST_IPS
    }


def _require_cryptography() -> None:
    """Imported on use: only ``server.tls: auto`` needs it, so it can stay an extra."""
    try:
        import cryptography  # noqa: F401
    except ImportError as error:
        raise ValueError(
            "server.tls: auto needs the 'cryptography' package: pip install 'corsproxy[tls]'"
        ) from error
