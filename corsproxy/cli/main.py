"""The command line: serve, validate, demo, check, completion. Bad input exits 2 with a
message, never a traceback.

Every server setting can also come from a CORSPROXY_* environment variable (for
containers); a flag beats the environment, which beats the file, which beats the default.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import argcomplete
from argcomplete.shell_integration import shellcode

from corsproxy.check.command import add_check_command, run_check
from corsproxy.cli.discovery import find_config, not_found_message
from corsproxy.config.checker import default_rule, origin_problem, upstream_problem
from corsproxy.config.loader import load_config
from corsproxy.config.model import (
    DEFAULT_PORT,
    REPLAY_MISSES,
    Config,
    ConfigError,
    RecordConfig,
    ReplayConfig,
    RouteConfig,
)
from corsproxy.har.reader import HarError, read_har
from corsproxy.har.writer import check_appendable
from corsproxy.log_writer import install as install_log
from corsproxy.patterns.origins import LOCAL_DEV_ORIGINS
from corsproxy.version import __version__

# Shells whose completion argcomplete writes: commands, options, choices and file names.
COMPLETION_SHELLS = ("bash", "zsh", "fish")
EXIT_OK = 0
EXIT_BAD_INPUT = 2
DEFAULT_GRACE_SECONDS = 10.0

ENV_CONFIG = "CORSPROXY_CONFIG"
ENV_HOST = "CORSPROXY_HOST"
ENV_PORT = "CORSPROXY_PORT"
ENV_UPSTREAM = "CORSPROXY_UPSTREAM"
ENV_ORIGINS = "CORSPROXY_ALLOW_ORIGINS"
ENV_CREDENTIALS = "CORSPROXY_ALLOW_CREDENTIALS"
ENV_LOG_LEVEL = "CORSPROXY_LOG_LEVEL"
ENV_ALLOWED_HOSTS = "CORSPROXY_ALLOWED_HOSTS"


class UsageError(Exception):
    """A command line or environment that cannot work; printed, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corsproxy",
        description="A local-development CORS proxy: forwards to an upstream API, answers "
        "preflights, and adds CORS headers according to YAML rules.",
    )
    parser.add_argument("--version", action="version", version=f"corsproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("file", nargs="?", metavar="FILE", help="YAML rules file (the same as --config)")
    serve.add_argument("--config", metavar="FILE", help=f"YAML rules file (env {ENV_CONFIG})")
    serve.add_argument(
        "--upstream", metavar="URL", help=f"quick mode: forward everything here (env {ENV_UPSTREAM})"
    )
    serve.add_argument("--host", help=f"address to listen on, default 127.0.0.1 (env {ENV_HOST})")
    serve.add_argument("--port", type=int, help=f"port to listen on, default 8080 (env {ENV_PORT})")
    serve.add_argument(
        "--allow-origin",
        action="append",
        metavar="PATTERN",
        help="quick mode: an allowed origin pattern, repeatable; default: "
        + ", ".join(LOCAL_DEV_ORIGINS)
        + f" (env {ENV_ORIGINS}, comma-separated)",
    )
    serve.add_argument(
        "--allow-credentials",
        action="store_true",
        default=None,
        help=f"quick mode: allow cookies and Authorization (env {ENV_CREDENTIALS}=true)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long in-flight requests may take to finish",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name the proxy answers to besides localhost and loopback addresses, repeatable; "
        f"'*' turns the DNS-rebinding guard off (env {ENV_ALLOWED_HOSTS}, comma-separated)",
    )
    serve.add_argument("--no-reload", action="store_true", help="do not watch the config file for changes")
    serve.add_argument(
        "--record",
        metavar="FILE.har",
        help="append every forwarded exchange to this HAR file (created if missing; the same as record.file)",
    )
    serve.add_argument(
        "--replay",
        metavar="FILE.har",
        help="answer requests from this HAR's recorded entries (the same as replay.file)",
    )
    serve.add_argument(
        "--replay-miss",
        choices=REPLAY_MISSES,
        help="a request the HAR has no answer for: forward it upstream (default) or answer 404",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT), for machines with cores to spare; default 1",
    )
    _add_log_level(serve)

    validate = commands.add_parser("validate", help="check a config file and print what it resolves to")
    validate.add_argument("file", metavar="FILE")

    demo = commands.add_parser("demo", help="run the proxy in front of a built-in echo upstream (offline)")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    _add_log_level(demo)
    add_check_command(commands)

    init = commands.add_parser("init", help="write a starter corsproxy.yaml for the project in this folder")
    init.add_argument(
        "--upstream", metavar="URL", help="the API to forward to (default: a placeholder to edit)"
    )
    init.add_argument("--port", type=int, default=DEFAULT_PORT, help="the proxy's port (default 8080)")
    init.add_argument("--force", action="store_true", help="replace an existing corsproxy.yaml")

    commands.add_parser(
        "schema",
        help="print the config file's JSON Schema (for editors: see the README, Configuration reference)",
    )

    completion = commands.add_parser(
        "completion",
        help='print the shell completion script: eval "$(corsproxy completion bash)" (README)',
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    return parser


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help=f"default info (env {ENV_LOG_LEVEL})",
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    parser = build_parser()
    # When the shell asks for completions (it sets _ARGCOMPLETE), argcomplete answers from
    # the parser and exits; otherwise this returns at once.
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "init":
        from corsproxy.cli.init import InitError, write

        try:
            written, project, change = write(Path.cwd(), args.upstream, args.force, args.port)
        except InitError as error:
            print(f"corsproxy init: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"wrote {written} for {project.kind}")
        print(f"in the frontend, call the proxy instead of the API: {change}")
        print("then run: corsproxy serve")
        return EXIT_OK
    if args.command == "schema":
        from corsproxy.config.schema import shipped

        print(json.dumps(shipped(), indent=2, ensure_ascii=False))
        return EXIT_OK
    if args.command == "completion":
        print(shellcode(["corsproxy"], shell=args.shell), end="")
        return EXIT_OK
    if args.command == "check":
        return run_check(args)
    try:
        if args.command == "validate":
            return validate(args.file, environ)
        _configure_logging(args.log_level or environ.get(ENV_LOG_LEVEL, "info"))
        if args.command == "demo":
            from corsproxy.cli.demo import main as demo_main

            return demo_main(args.host, args.port)
        return serve(args, environ)
    except ConfigError as error:
        print(error.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as error:
        print(f"corsproxy: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _configure_logging(level: str) -> None:
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"{ENV_LOG_LEVEL}={level!r}: use debug, info, warning or error")
    install_log(sys.stderr, level.upper())


def resolve_config(
    args: argparse.Namespace, env: Mapping[str, str], settings: Callable[[Config], Config] | None = None
) -> Config:
    """The configuration ``serve`` runs with, from flags, environment and file
    (``settings``: what ``command_line_settings`` made of the flags, if made already)."""
    if args.file and args.config and args.file != args.config:
        raise UsageError(f"give the rules file once: {args.file} or --config {args.config}")
    config_file = named_config(args, env)
    upstream = args.upstream or env.get(ENV_UPSTREAM)
    if config_file and args.upstream:
        raise UsageError("give either --config or --upstream, not both")
    if config_file:
        config = load_config(config_file, env)
    elif upstream:
        config = quick_config(upstream, _quick_origins(args, env), _quick_credentials(args, env))
    elif (found := find_config(Path.cwd(), Path.home())) is not None:
        print(f"corsproxy: using {found}", file=sys.stderr)
        args.config = str(found)  # watched for changes as a named file is
        config = load_config(found, env)
    elif args.replay:
        # A replay alone, and no config file around: offline, no upstream at all.
        rules = (default_rule(_quick_origins(args, env), _quick_credentials(args, env)),)
        config = Config(routes=(), rules=rules, source="command line")
    else:
        raise UsageError(not_found_message(Path.cwd(), Path.home()))
    return (settings or command_line_settings(args, env))(config)


def named_config(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The config file the command line or the environment names (or discovery found)."""
    named: str | None = args.file or args.config or env.get(ENV_CONFIG)
    return named


def command_line_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Callable[[Config], Config]:
    """What flags and the environment set on top of a config file: applied to the file
    when the proxy starts and again on every reload of it."""
    recording = _recording(args.record) if args.record else None
    replaying = _replaying(args.replay, args.replay_miss) if args.replay else None
    host_flag = args.host or env.get(ENV_HOST)
    port_flag = args.port if args.port is not None else _env_port(env)
    if port_flag is not None and not 0 <= port_flag <= 65535:
        raise UsageError(f"port must be between 0 and 65535, got {port_flag}")
    allowed = tuple(args.allowed_host or ()) or tuple(
        name.strip() for name in env.get(ENV_ALLOWED_HOSTS, "").split(",") if name.strip()
    )

    def apply(config: Config) -> Config:
        server = replace(
            config.server,
            host=host_flag or config.server.host,
            port=config.server.port if port_flag is None else port_flag,
        )
        if allowed:
            server = replace(server, allowed_hosts=(*config.server.allowed_hosts, *allowed))
        config = replace(config, server=server)
        if recording is not None:
            config = replace(config, record=recording)
        if replaying is not None:
            config = replace(config, replay=replaying)
        elif args.replay_miss and config.replay is not None:
            config = replace(config, replay=replace(config.replay, miss=args.replay_miss))
        return config

    return apply


def _recording(file: str) -> RecordConfig:
    problem = check_appendable(Path(file))
    if problem is not None:
        raise ConfigError([f"--record {file}: cannot record there: {problem}"], "command line")
    return RecordConfig(str(Path(file).resolve()))


def _replaying(file: str, miss: str | None) -> ReplayConfig:
    try:
        entries = read_har(Path(file))
    except HarError as error:
        raise ConfigError(
            [f"--replay {file}: {problem}" for problem in error.problems], "command line"
        ) from None
    return ReplayConfig(str(Path(file).resolve()), miss or "forward", entries)


def quick_config(upstream: str, origins: tuple[str, ...], credentials: bool) -> Config:
    problems = [f"--upstream: {problem}" for problem in [upstream_problem(upstream)] if problem]
    problems += [f"--allow-origin {text}: {p}" for text in origins if (p := origin_problem(text))]
    if credentials and "*" in origins:
        problems.append(
            "--allow-origin '*' cannot go with --allow-credentials: browsers reject it; name the origins"
        )
    if problems:
        raise ConfigError(problems, "command line")
    return Config(
        routes=(RouteConfig(path="/", upstream=upstream.rstrip("/")),),
        rules=(default_rule(origins, credentials),),
        source="command line",
    )


def _quick_origins(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, ...]:
    if args.allow_origin:
        return tuple(args.allow_origin)
    listed = [item.strip() for item in env.get(ENV_ORIGINS, "").split(",") if item.strip()]
    return tuple(listed) or LOCAL_DEV_ORIGINS


def _quick_credentials(args: argparse.Namespace, env: Mapping[str, str]) -> bool:
    if args.allow_credentials is not None:
        return bool(args.allow_credentials)
    value = env.get(ENV_CREDENTIALS, "false").strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", ""):
        raise UsageError(f"{ENV_CREDENTIALS}={value!r}: use true or false")
    return value in ("true", "1", "yes")


def _env_port(env: Mapping[str, str]) -> int | None:
    value = env.get(ENV_PORT)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{ENV_PORT}={value!r} is not a port number") from None


def serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from corsproxy.server import runner
    from corsproxy.server.app import create_app

    settings = command_line_settings(args, env)
    config = resolve_config(args, env, settings)
    host, port = config.server.host, config.server.port
    config_file = named_config(args, env)
    watch = Path(config_file) if config_file and not args.no_reload else None
    if env.get(ENV_IN_CONTAINER) == "1" and host in UNSPECIFIED_HOSTS:
        # The image listens on every interface on purpose: what matters is where it is published.
        print(f"corsproxy: {CONTAINER_NOTE}", file=sys.stderr)
    elif warning := exposure_warning(host):
        print(f"WARNING: {warning}", file=sys.stderr)
    ssl_context = server_tls_context(config)
    workers = args.workers
    if workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {workers}")
    if workers > 1 and port == 0:
        raise UsageError("--workers needs a fixed --port: with port 0 each worker would get its own")
    if workers > 1 and config.replay is not None:
        print(
            "corsproxy: note: with --workers, each worker keeps its own place in repeated recorded "
            "answers, so a sequence (queued, running, done) may start again on another worker",
            file=sys.stderr,
        )

    def announce(bound_port: int) -> None:
        # Printed once the port is bound, so the banner never names a port it does not have.
        shown = replace(config, server=replace(config.server, port=bound_port))
        extra = f"\n  {workers} workers sharing the port" if workers > 1 else ""
        print(banner(shown) + extra, flush=True)

    def serve_one(announce_when_bound: bool = True) -> int:
        try:
            runner.run(
                create_app(config, watch=watch, adjust=settings),
                host=host,
                port=port,
                ssl_context=ssl_context,
                grace=args.grace,
                reuse_port=workers > 1,
                loop=fast_event_loop(),
                on_listening=announce if announce_when_bound else None,
            )
        except OSError as error:
            print(f"corsproxy: {runner.listen_failure(host, port, error)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return EXIT_OK

    if workers == 1:
        return serve_one()
    from corsproxy.cli.workers import run_workers

    # The workers share the port through SO_REUSEPORT: the banner is said once, up front.
    announce(port)
    return run_workers(workers, lambda: serve_one(announce_when_bound=False))


def fast_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (``pip install 'corsproxy[speed]'``), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def server_tls_context(config: Config) -> ssl.SSLContext | None:
    """The proxy's own HTTPS: a configured certificate, or a self-signed one for localhost
    made once and kept, with the commands to trust it printed the first time."""
    tls = config.server.tls
    if tls is None:
        return None
    from corsproxy.tls import auto_certificate, default_state_dir, server_ssl_context, trust_instructions

    try:
        if tls.auto:
            cert, key, created = auto_certificate(default_state_dir())
            if created:
                print(trust_instructions(cert), file=sys.stderr)
        else:
            if tls.cert is None or tls.key is None:
                raise UsageError("server.tls needs both cert and key, or `tls: auto`")
            cert, key = Path(tls.cert), Path(tls.key)
        return server_ssl_context(cert, key)
    except (ValueError, OSError) as error:
        raise UsageError(f"server.tls: {error}") from error


def banner(config: Config) -> str:
    host = config.server.host
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.server.tls else "http"
    base = f"{scheme}://{shown}:{config.server.port}"
    lines = [f"corsproxy {__version__} on {base} ({config.source})"]
    lines += [f"  {base}{route.path.rstrip('/')}/... -> {route.upstream}" for route in config.routes]
    if config.mocks:
        lines.append(f"  mocks: {len(config.mocks)}, answered before any route")
    if config.replay is not None:
        replay = config.replay
        lines.append(f"  replaying {replay.file} ({len(replay.entries)} entries; a miss: {replay.miss})")
    if config.record is not None:
        lines.append(f"  recording forwarded exchanges to {config.record.file}")
    lines.append(f"  inspector: {base}/__corsproxy/")
    lines.append(f"  health: {base}/__corsproxy/health")
    return "\n".join(lines)


# Set by the container image (Dockerfile), where listening on every interface is intended.
ENV_IN_CONTAINER = "CORSPROXY_IN_CONTAINER"
UNSPECIFIED_HOSTS = ("0.0.0.0", "::", "[::]")
CONTAINER_NOTE = (
    "listening on every interface inside the container; publish the port on the host's loopback "
    "only (docker run -p 127.0.0.1:8080:8080, or ports: ['127.0.0.1:8080:8080'] in compose), or "
    "other machines on the network can use this proxy and any credentials it injects"
)


def exposure_warning(host: str) -> str | None:
    """Loopback unless told otherwise (README, "Safe by default"), and then say what it means."""
    if host in ("localhost", ""):
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"listening on {host}, not loopback: other machines on the network can use this proxy "
        "and any credentials it injects. Use --host 127.0.0.1 unless that is what you want."
    )


def validate(path: str, env: Mapping[str, str]) -> int:
    config = load_config(path, env)
    print(describe(config))
    return EXIT_OK


def describe(config: Config) -> str:
    """A human summary of a resolved configuration, secrets shown as ***."""
    lines = [f"{config.source}: OK", f"server: {config.server.host}:{config.server.port}", "routes:"]
    for route in config.routes:
        strip = "" if route.strip_prefix or route.path == "/" else " (prefix kept)"
        lines.append(f"  {route.path} -> {route.upstream}{strip}")
        for name, value in route.request_headers:
            shown = "***" if value in config.secrets or any(s in value for s in config.secrets) else value
            lines.append(f"      sets {name}: {shown}")
    if config.record is not None:
        lines.append(f"record: {config.record.file} (bodies up to {config.record.max_body} bytes)")
    if config.replay is not None:
        replay = config.replay
        lines.append(f"replay: {replay.file}, {len(replay.entries)} entries (a miss: {replay.miss})")
    lines.append("rules (first match wins):")
    for index, rule in enumerate(config.rules):
        lines.append(f"  rules[{index}] path {rule.path}: origins {', '.join(rule.origins)}")
        methods = ", ".join(rule.allow_methods) or "none"
        headers = ", ".join(rule.allow_headers) or "none"
        lines.append(f"      methods {methods}; headers {headers}")
        extras = []
        if rule.expose_headers:
            extras.append(f"exposes {', '.join(rule.expose_headers)}")
        extras.append("credentials" if rule.allow_credentials else "no credentials")
        if rule.max_age is not None:
            extras.append(f"max_age {rule.max_age}")
        if rule.allow_private_network:
            extras.append("private network")
        lines.append("      " + "; ".join(extras))
    return "\n".join(lines)
