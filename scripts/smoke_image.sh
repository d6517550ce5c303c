#!/usr/bin/env bash
# Smoke test of the serving image: build it, run it, POST a Parquet batch, check the
# predictions (scripts/smoke_check.py), run the image's HEALTHCHECK, stop and remove it.
#
#   scripts/smoke_image.sh                  # docker when its daemon answers, else podman
#   ENGINE=podman NETWORK=host scripts/smoke_image.sh
#
# Knobs (environment):
#   ENGINE      the container CLI, words allowed ("podman --runtime runc"); default: docker or podman
#   IMAGE       the tag to build (default mlops-flights-api:smoke)
#   PORT        the port the API listens on, and the host port (default 8000)
#   NETWORK     "host": run on the host network instead of publishing PORT
#   BUILD_OPTS  extra words for `build` (e.g. pip settings for a proxy: -v pip.conf:/etc/pip.conf:ro)
#   RUN_OPTS    extra words for `run` (e.g. -e MLOPS_API_KEY=...; --ulimit ...)
#   SKIP_BUILD  1: use the image already tagged IMAGE
#   PYTHON      the host Python with the project's requirements (default .venv/bin/python)
# Prints one "[smoke] ..." line per step and SMOKE_OK (exit 0) or FAIL <reason> (exit 1) last.
set -uo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL $*"; exit 1; }
step() { printf '[smoke] %s\n' "$*"; }

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else fail "neither docker (with a running daemon) nor podman is available"; fi
fi
IMAGE=${IMAGE:-mlops-flights-api:smoke}
PORT=${PORT:-8000}
PYTHON=${PYTHON:-.venv/bin/python}
NAME=mlops-flights-smoke-$PORT-$$
LOGS=$(mktemp -d)
# shellcheck disable=SC2086
cleanup() { $ENGINE rm -f "$NAME" >/dev/null 2>&1; rm -rf "$LOGS"; }
trap cleanup EXIT

# --- build ---
if [ "${SKIP_BUILD:-}" != 1 ]; then
  step "building $IMAGE with $ENGINE"
  started=$(date +%s)
  # shellcheck disable=SC2086
  $ENGINE build ${BUILD_OPTS:-} -t "$IMAGE" . >"$LOGS/build.log" 2>&1 \
    || { tail -30 "$LOGS/build.log"; fail "build (log above)"; }
  step "built in $(( $(date +%s) - started )) s"
fi
# shellcheck disable=SC2086
bytes=$($ENGINE image inspect -f '{{.Size}}' "$IMAGE") || fail "no image $IMAGE"
step "image $IMAGE: $(( bytes / 1000000 )) MB"

# --- run ---
if [ "${NETWORK:-}" = host ]; then net=(--network host); else net=(-p "127.0.0.1:$PORT:$PORT"); fi
# shellcheck disable=SC2086
$ENGINE run -d --name "$NAME" "${net[@]}" -e PORT="$PORT" ${RUN_OPTS:-} "$IMAGE" >"$LOGS/run.log" 2>&1 \
  || { cat "$LOGS/run.log"; fail "run"; }
step "started container $NAME (port $PORT)"

# --- predictions ---
if ! PYTHONPATH=mlops_pipeline/src "$PYTHON" scripts/smoke_check.py "http://127.0.0.1:$PORT"; then
  echo "--- container log (last 30 lines) ---"
  # shellcheck disable=SC2086
  $ENGINE logs --tail 30 "$NAME" 2>&1
  fail "the API's answers (above)"
fi

# --- the image's own HEALTHCHECK ---
case "$ENGINE" in
  *podman*)
    # shellcheck disable=SC2086
    $ENGINE healthcheck run "$NAME" >/dev/null 2>&1 && health=healthy || health=unhealthy ;;
  *)
    health=starting
    for _ in $(seq 1 60); do
      # shellcheck disable=SC2086
      health=$($ENGINE inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null)
      [ "$health" = starting ] || break
      sleep 2
    done ;;
esac
[ "$health" = healthy ] || fail "HEALTHCHECK says $health"
step "HEALTHCHECK: $health"

# --- stop ---
# shellcheck disable=SC2086
$ENGINE stop -t 20 "$NAME" >/dev/null 2>&1 || fail "stop"
step "stopped"
echo SMOKE_OK
