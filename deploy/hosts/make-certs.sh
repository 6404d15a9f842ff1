#!/usr/bin/env bash
# Makes the TLS files for a learner that actors reach across machines: a CA, and a certificate for the learner
# signed by it (ECDSA P-256, with openssl).
#
#   deploy/hosts/make-certs.sh DIR NAME [NAME...]
#   deploy/hosts/make-certs.sh ./tls learner.example.com 192.168.1.10
#
# NAMEs are the names and IP addresses the actors use for the learner host (their LEARNER_HOST); `localhost` and
# 127.0.0.1 are always added, for the learner container's health check (https://127.0.0.1:50051, verified as
# `localhost`). Writes into DIR:
#   ca.pem           the CA certificate: every actor host's PROXIMA_TLS_DIR, and the learner host's (health check)
#   ca-key.pem       the CA's key, which signs certificates: keep it off the hosts
#   learner.pem      the learner's certificate    } the learner host's PROXIMA_TLS_DIR
#   learner-key.pem  the learner's key            }
# A CA already in DIR is kept, so a new or renewed learner certificate needs no new ca.pem on the actor hosts.
# The images run as uid 10001: run as root, the script gives learner-key.pem to 10001 (mode 0600); otherwise
# `sudo chown 10001 DIR/learner-key.pem` before mounting it.
#
# Environment: DAYS, the learner certificate's validity (default 825; the CA's is 3650).
set -euo pipefail
umask 077

if [[ $# -lt 2 ]]; then
  echo "usage: make-certs.sh DIR NAME [NAME...]   (NAME: the learner host's DNS name or IP address)" >&2
  exit 2
fi
command -v openssl >/dev/null || {
  echo "make-certs.sh: openssl is not installed" >&2
  exit 1
}
dir=$1
shift
[[ -d $dir ]] || install -d -m 0755 "$dir" # the containers' user 10001 must be able to enter it
cd "$dir"

sans=()
for name in "$@" localhost 127.0.0.1; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
    sans+=("IP:$name")
  else
    sans+=("DNS:$name")
  fi
done
san=$(IFS=,; echo "${sans[*]}")

if [[ ! -f ca.pem || ! -f ca-key.pem ]]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca-key.pem -out ca.pem \
    -days 3650 -subj "/CN=proxima learner CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "== new CA: $dir/ca.pem"
fi

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout learner-key.pem \
  -out learner.csr -subj "/CN=$1" 2>/dev/null
cat >learner.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EOF
openssl x509 -req -in learner.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out learner.pem \
  -days "${DAYS:-825}" -extfile learner.ext 2>/dev/null
rm -f learner.csr learner.ext ca.srl
chmod 0644 ca.pem learner.pem
chmod 0600 ca-key.pem learner-key.pem
if [[ $(id -u) == 0 ]]; then
  chown 10001:10001 learner-key.pem
fi
echo "== learner certificate for $san: $dir/learner.pem, key $dir/learner-key.pem"
