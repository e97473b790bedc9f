#!/usr/bin/env bash
# Generate a development CA and a localhost server certificate for wsgate.
#
#   bash certs/gen-dev-certs.sh            # create what is missing, never overwrite
#   bash certs/gen-dev-certs.sh --force    # regenerate everything
#   bash certs/gen-dev-certs.sh --out DIR  # write somewhere else than certs/
#
# Writes (all ignored by git; see certs/README.md):
#   dev-ca.pem   development CA certificate      (trust this in clients)
#   dev-ca.key   development CA private key      (PKCS#8, mode 600)
#   server.pem   server certificate chain: leaf, then the CA
#                (SAN: DNS:localhost, IP:127.0.0.1, IP:::1)
#   server.key   server private key              (PKCS#8, mode 600)
#
# Keys are ECDSA P-256: accepted by rustls, OpenSSL, Python's ssl, Node and browsers.
# If the CA already exists but the server pair does not, the server certificate
# is issued by the existing CA, so clients that already trust it keep working.
set -euo pipefail

# Validity in days. The leaf stays under the 398/825-day limits some clients
# (Apple, browsers) enforce even for private CAs; the CA lives longer so it is
# trusted once and then forgotten about.
readonly CA_DAYS=1825
readonly LEAF_DAYS=365

usage() {
    # The header comment above, up to the first line that is not a comment.
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

out_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --out)
            [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }
            out_dir="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

command -v openssl >/dev/null 2>&1 || {
    echo "error: openssl not found (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 1
}

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
ca_pem="$out_dir/dev-ca.pem"
ca_key="$out_dir/dev-ca.key"
srv_pem="$out_dir/server.pem"
srv_key="$out_dir/server.key"

# Paths as the user would type them (relative to the current directory when possible).
show() { case "$1" in "$PWD"/*) printf '%s' "${1#"$PWD"/}" ;; *) printf '%s' "$1" ;; esac; }

print_trust_help() {
    local ca srv key
    ca="$(show "$ca_pem")"
    srv="$(show "$srv_pem")"
    key="$(show "$srv_key")"
    cat <<EOF

wsgate listener (config/wsgate.yaml):
    listeners:
      - bind: "127.0.0.1:8443"
        tls: { cert: $srv, key: $key }

Trust the development CA in a client (for this CA only, never disable verification):
    curl --cacert $ca https://localhost:8443/
    openssl s_client -connect localhost:8443 -CAfile $ca -verify_return_error </dev/null
    python3 -c 'import ssl; ctx = ssl.create_default_context(cafile="$ca")'
        # then: websockets.asyncio.client.connect("wss://localhost:8443/echo", ssl=ctx)
    NODE_EXTRA_CA_CERTS=$ca node client.js
    SSL_CERT_FILE=$ca <program using OpenSSL's default paths>

System-wide on Debian/Ubuntu (only on a development machine; undo by deleting the file
and running update-ca-certificates --fresh):
    sudo cp $ca /usr/local/share/ca-certificates/wsgate-dev-ca.crt && sudo update-ca-certificates
EOF
}

exists() { [ -e "$1" ]; }

if [ "$force" -eq 0 ]; then
    if exists "$ca_pem" && exists "$ca_key" && exists "$srv_pem" && exists "$srv_key"; then
        echo "Development certificates already exist in $(show "$out_dir")/ (use --force to regenerate)."
        print_trust_help
        exit 0
    fi
    # Refuse to touch a half-present pair: a lone key or certificate is someone's
    # file, and replacing half of a pair would leave a mismatched key/certificate.
    for pair in "$ca_pem:$ca_key" "$srv_pem:$srv_key"; do
        a="${pair%%:*}"
        b="${pair#*:}"
        if { exists "$a" && ! exists "$b"; } || { ! exists "$a" && exists "$b"; }; then
            echo "error: only one of $(show "$a") and $(show "$b") exists; refusing to overwrite it." >&2
            echo "       Remove it, or run with --force to regenerate everything." >&2
            exit 1
        fi
    done
    if ! exists "$ca_pem" && exists "$srv_pem"; then
        echo "error: $(show "$srv_pem") exists but its CA $(show "$ca_pem") does not; refusing to overwrite it." >&2
        echo "       Remove it, or run with --force to regenerate everything." >&2
        exit 1
    fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
umask 077

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# 128 random bits, positive: a unique serial without a .srl state file.
new_serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

host="$(hostname 2>/dev/null || echo localhost)"
stamp="$(date -u +%Y-%m-%dT%H:%MZ)"

if [ "$force" -eq 1 ] || ! exists "$ca_pem"; then
    cat >"$tmp/ca.ext" <<'EOF'
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    new_key "$tmp/ca.key"
    openssl req -new -key "$tmp/ca.key" -subj "/O=wsgate development/CN=wsgate dev CA ($host $stamp)" \
        -out "$tmp/ca.csr"
    openssl x509 -req -in "$tmp/ca.csr" -signkey "$tmp/ca.key" -days "$CA_DAYS" -sha256 \
        -set_serial "$(new_serial)" -extfile "$tmp/ca.ext" -out "$tmp/ca.pem" 2>/dev/null
    install -m 600 "$tmp/ca.key" "$ca_key"
    install -m 644 "$tmp/ca.pem" "$ca_pem"
    echo "Created development CA: $(show "$ca_pem") (key: $(show "$ca_key"))"
else
    echo "Reusing existing development CA: $(show "$ca_pem")"
fi

cat >"$tmp/leaf.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
new_key "$tmp/server.key"
openssl req -new -key "$tmp/server.key" -subj "/O=wsgate development/CN=localhost" -out "$tmp/server.csr"
openssl x509 -req -in "$tmp/server.csr" -CA "$ca_pem" -CAkey "$ca_key" -days "$LEAF_DAYS" -sha256 \
    -set_serial "$(new_serial)" -extfile "$tmp/leaf.ext" -out "$tmp/leaf.pem" 2>/dev/null
cat "$tmp/leaf.pem" "$ca_pem" >"$tmp/server.pem"

openssl verify -CAfile "$ca_pem" "$tmp/leaf.pem" >/dev/null

install -m 600 "$tmp/server.key" "$srv_key"
install -m 644 "$tmp/server.pem" "$srv_pem"
echo "Created server certificate: $(show "$srv_pem") (key: $(show "$srv_key"))"
echo "    for localhost, 127.0.0.1 and ::1; valid $LEAF_DAYS days; chain = leaf + CA"
print_trust_help
