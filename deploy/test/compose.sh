#!/usr/bin/env bash
# `docker compose` (v2 plugin, else `docker-compose` v1.28+) on deploy/docker-compose.yml plus the test override
# deploy/test/docker-compose.test.yml: locally built :test images (run deploy/test/build-images.sh first), no
# Grafana, every port published on a free loopback port, project name `proxima-test` unless COMPOSE_PROJECT_NAME
# is set. Arguments go to compose, e.g.:
#
#   deploy/test/build-images.sh
#   deploy/test/compose.sh up -d --no-build --scale actor=3
#   deploy/test/compose.sh port learner 9000        # -> 127.0.0.1:<port>; curl http://127.0.0.1:<port>/metrics
#   deploy/test/compose.sh down -v --remove-orphans
set -euo pipefail
DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-proxima-test}
export PROXIMA_GRPC_PORT=${PROXIMA_GRPC_PORT:-127.0.0.1:0}
export PROXIMA_METRICS_PORT=${PROXIMA_METRICS_PORT:-127.0.0.1:0}
export PROXIMA_DASHBOARD_PORT=${PROXIMA_DASHBOARD_PORT:-127.0.0.1:0}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-127.0.0.1:0}
export GRAFANA_PORT=${GRAFANA_PORT:-127.0.0.1:0}

# shellcheck source=deploy/test/compose-command.sh
source "$DEPLOY/test/compose-command.sh" compose.sh
cd "$DEPLOY"
exec "${compose[@]}" -f docker-compose.yml -f test/docker-compose.test.yml "$@"
