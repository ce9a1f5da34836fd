# corsproxy container image.
#
#   docker build -t corsproxy .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#       -v "$PWD/corsproxy.yaml:/etc/corsproxy/config.yaml:ro" corsproxy
#
# With podman, build with `--format docker`: the OCI image format has no HEALTHCHECK.

# One pinned base for both stages: the virtualenv built in the first stage points at this
# interpreter, so the final stage must be the very same image.
ARG PYTHON_BASE=python:3.11.13-slim-bookworm

FROM ${PYTHON_BASE} AS builder
WORKDIR /src
# A virtualenv rather than the system site-packages: one directory to copy to the final stage,
# wherever the base keeps its Python. It gets no pip of its own (the base's pip installs into it
# with --python), so the final image carries no installer.
#
# The dependencies, read from pyproject.toml, come first in a layer of their own: changing the
# code does not download them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir \
       --disable-pip-version-check --root-user-action=ignore -r /tmp/requirements.txt

COPY README.md ./
COPY corsproxy ./corsproxy
RUN python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
       --root-user-action=ignore --no-deps --no-build-isolation . \
    && python -m pip --python /opt/venv/bin/python uninstall --yes --disable-pip-version-check \
       --root-user-action=ignore setuptools

FROM ${PYTHON_BASE}
LABEL org.opencontainers.image.title="corsproxy" \
      org.opencontainers.image.description="A local-development CORS proxy" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 corsproxy \
    && useradd --system --uid 10001 --gid corsproxy --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin corsproxy

COPY --from=builder /opt/venv /opt/venv
COPY container/entrypoint.sh /usr/local/bin/corsproxy-entrypoint

# Inside the container the proxy must listen on every interface so that a published port
# reaches it; publish on the host's loopback only (-p 127.0.0.1:8080:8080).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CORSPROXY_HOST=0.0.0.0 \
    CORSPROXY_PORT=8080 \
    CORSPROXY_IN_CONTAINER=1

USER 10001:10001
EXPOSE 8080

# python, not curl: the slim base has no curl. http.client ignores HTTP(S)_PROXY variables
# that a compose file may set for the upstream.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import http.client, os, sys; c = http.client.HTTPConnection('127.0.0.1', int(os.environ.get('CORSPROXY_PORT', '8080')), timeout=2); c.request('GET', '/__corsproxy/health'); sys.exit(c.getresponse().status != 200)"]

STOPSIGNAL SIGTERM
# The entrypoint picks up /etc/corsproxy/config.yaml when it is mounted, then execs corsproxy.
ENTRYPOINT ["corsproxy-entrypoint"]
CMD ["serve"]
