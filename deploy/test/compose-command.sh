# Sourced by compose.sh and hosts.sh: sets the array `compose` to the compose command this machine has (the v2
# plugin, else `docker-compose` v1.28+), or exits with a message. `$1`: the calling script's name, for the message.
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "$1: neither \`docker compose\` nor \`docker-compose\` is installed" >&2
  exit 1
fi
