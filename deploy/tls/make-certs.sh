#!/usr/bin/env bash
# Create a private certificate authority and one certificate for a Dask cluster.
#
#   deploy/tls/make-certs.sh OUTDIR [EXTRA_SUBJECT_ALT_NAMES]
#
# Writes into OUTDIR (created; existing files are never overwritten):
#   ca.crt   the authority's certificate: every party trusts it (distributed.comm.tls.ca-file)
#   ca.key   the authority's key: keep it offline, it is needed only to sign new certificates
#   tls.crt  certificate used by the scheduler, the workers and the clients
#   tls.key  its private key (mode 600)
# Dask verifies that the peer's certificate is signed by the cluster's own
# authority and does not check host names, so one certificate serves every
# role; the subject alternative names (default DNS:localhost,IP:127.0.0.1,
# plus EXTRA_SUBJECT_ALT_NAMES such as DNS:stream-relu-fit-scheduler) are for
# other tools.  Validity: DAYS days (environment, default 365).  Needs openssl.

set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -* ]]; then
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
out=$1
sans="DNS:localhost,IP:127.0.0.1${2:+,$2}"
days="${DAYS:-365}"
if ! [[ "$days" =~ ^[1-9][0-9]*$ ]]; then
    echo "make-certs.sh: DAYS must be a positive integer, got '$days'" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found" >&2; exit 1; }

mkdir -p "$out"
for f in ca.crt ca.key tls.crt tls.key; do
    if [[ -e "$out/$f" ]]; then
        echo "make-certs.sh: $out/$f exists; refusing to overwrite" >&2
        exit 1
    fi
done
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days "$days" -subj "/CN=stream-relu dask CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tmp/tls.key" -out "$tmp/tls.csr" -subj "/CN=stream-relu dask" 2>/dev/null
cat >"$tmp/ext.cnf" <<CNF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $sans
CNF
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days "$days" -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
openssl verify -CAfile "$tmp/ca.crt" "$tmp/tls.crt" >/dev/null

install -m 600 "$tmp/ca.key" "$tmp/tls.key" "$out/"
install -m 644 "$tmp/ca.crt" "$tmp/tls.crt" "$out/"
echo "make-certs.sh: wrote ca.crt, ca.key, tls.crt, tls.key to $out (subject alt names $sans)" >&2
