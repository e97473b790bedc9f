#!/usr/bin/env bash
# Throw-away TLS material for the benchmarks, in DIR: a P-256 CA (ca.pem) and a
# localhost server certificate signed by it (server.pem, server.key, and both in
# server-with-key.pem for HAProxy). Valid two days; never used outside benches/.
# Usage: bash benches/make-certs.sh DIR
set -euo pipefail
mkdir -p "$1"
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj "/CN=wsgate bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out server.pem 2>/dev/null
cat server.pem server.key >server-with-key.pem
