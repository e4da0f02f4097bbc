#!/usr/bin/env bash
# The HTTP port over TLS when a certificate is configured: the API and /metrics answer over
# HTTPS with the configured chain (verified by curl against its CA), plain HTTP gets nothing.
source "$(dirname "$0")/lib.sh"
NG=22741; HTTP=18591
command -v openssl >/dev/null || fail "openssl not installed"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat >"$WORK/tandem.toml" <<CFG
[http]
listen = "127.0.0.1:$HTTP"
tls_certificate = "$WORK/cert.pem"
tls_private_key = "$WORK/key.pem"
CFG
export TANDEM_ADMIN_PASSWORD=tls-test-admin
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --sip 127.0.0.1:25660
base="https://127.0.0.1:$HTTP"
curl -fsS --cacert "$WORK/cert.pem" "$base/api/v1/openapi.json" | grep -q '"openapi"' || fail "no OpenAPI over HTTPS"
token=$(curl -fsS --cacert "$WORK/cert.pem" -X POST "$base/api/v1/sessions" -H 'Content-Type: application/json' \
  -d '{"username":"admin","password":"tls-test-admin"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS --cacert "$WORK/cert.pem" "$base/api/v1/me" -H "Authorization: Bearer $token" | grep -q system_admin \
  || fail "authenticated request over HTTPS failed"
curl -fsS --cacert "$WORK/cert.pem" "$base/metrics" | grep -q 'tandem_api_requests_total{method="GET",route="/api/v1/me",status="200"} 1' \
  || fail "metrics over HTTPS"
if curl -fsS -m 3 "http://127.0.0.1:$HTTP/health" >/dev/null 2>&1; then fail "plain HTTP answered on the TLS port"; fi
echo "ok: API and metrics over HTTPS with the configured certificate"
