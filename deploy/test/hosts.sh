#!/usr/bin/env bash
# `docker compose` (v2 plugin, else `docker-compose` v1.28+) on the per-host files of a setup on several machines,
# deploy/hosts/ROLE/docker-compose.yml (ROLE: learner or actor; with --tls its docker-compose.tls.yml too), plus
# the test override deploy/test/hosts-ROLE.test.yml (locally built :test images; run deploy/test/build-images.sh
# first). Settings come from the environment (and deploy/hosts/ROLE/.env, if there is one); project
# `proxima-test-ROLE` unless COMPOSE_PROJECT_NAME is set. The learner role publishes every port on a free loopback port unless set, e.g.:
#
#   deploy/test/build-images.sh
#   PROXIMA_GRPC_PORT=172.17.0.1:50051 PROMETHEUS_PORT=172.17.0.1:9090 deploy/test/hosts.sh learner up -d
#   LEARNER_HOST=172.17.0.1 CENTRAL_PROMETHEUS_IP=172.17.0.1 ACTOR_HOST_NAME=a \
#     COMPOSE_PROJECT_NAME=proxima-test-a deploy/test/hosts.sh actor up -d --scale actor=2
#
# (publishing on the default bridge's gateway, 172.17.0.1, exposes the ports to every container on this host.)
set -euo pipefail
DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

role=${1:-}
case $role in
  learner | actor) shift ;;
  *)
    echo "usage: hosts.sh learner|actor [--tls] COMPOSE-ARGS..." >&2
    exit 2
    ;;
esac
# --tls: the role's docker-compose.tls.yml too (PROXIMA_TLS_DIR and, for actors, LEARNER_SCHEME=https).
files=(-f docker-compose.yml)
if [[ ${1:-} == --tls ]]; then
  shift
  files+=(-f docker-compose.tls.yml)
fi
files+=(-f "../../test/hosts-$role.test.yml")

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-proxima-test-$role}
if [[ $role == learner ]]; then
  export PROXIMA_GRPC_PORT=${PROXIMA_GRPC_PORT:-127.0.0.1:0}
  export PROXIMA_METRICS_PORT=${PROXIMA_METRICS_PORT:-127.0.0.1:0}
  export PROXIMA_DASHBOARD_PORT=${PROXIMA_DASHBOARD_PORT:-127.0.0.1:0}
  export PROMETHEUS_PORT=${PROMETHEUS_PORT:-127.0.0.1:0}
  export GRAFANA_PORT=${GRAFANA_PORT:-127.0.0.1:0}
fi

# shellcheck source=deploy/test/compose-command.sh
source "$DEPLOY/test/compose-command.sh" hosts.sh
cd "$DEPLOY/hosts/$role"
exec "${compose[@]}" "${files[@]}" "$@"
