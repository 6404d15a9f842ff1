# Sourced by compose.sh and hosts.sh: sets the array `compose` to the compose command to use, or exits with a
# message. `$1`: the calling script's name, for the message. PROXIMA_COMPOSE picks one: `v2` (the `docker compose`
# plugin), `v1` (`docker-compose` 1.28+); unset: the v2 plugin if this machine has it, else `docker-compose`. The
# tests run some deployments with each (scripts/test.sh installs both).
v2() { docker compose version >/dev/null 2>&1; }
v1() { command -v docker-compose >/dev/null && [[ $(docker-compose version --short 2>/dev/null) == 1.* ]]; }
case ${PROXIMA_COMPOSE:-} in
  v2) v2 || { echo "$1: PROXIMA_COMPOSE=v2 but \`docker compose\` (the v2 plugin) is not installed" >&2; exit 1; } ;;
  v1) v1 || { echo "$1: PROXIMA_COMPOSE=v1 but \`docker-compose\` 1.x is not installed" >&2; exit 1; } ;;
  "") ;;
  *) echo "$1: PROXIMA_COMPOSE must be v1 or v2, not '$PROXIMA_COMPOSE'" >&2; exit 1 ;;
esac
if [[ ${PROXIMA_COMPOSE:-} == v2 ]] || { [[ -z ${PROXIMA_COMPOSE:-} ]] && v2; }; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "$1: neither \`docker compose\` nor \`docker-compose\` is installed" >&2
  exit 1
fi
