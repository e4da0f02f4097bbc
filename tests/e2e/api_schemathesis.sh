#!/usr/bin/env bash
# schemathesis (property-based API fuzzer, from PyPI) against the OpenAPI document Tandem serves:
# generated and mutated requests to every operation must never get a 5xx, and every response
# must match the documented status codes, content types and schemas. Runs as a tenant
# administrator (the widest tenant view) and as a system administrator.
source "$(dirname "$0")/lib.sh"
NG=22541; HTTP=18391
SCHEMATHESIS="$ROOT/.tools/venv/bin/schemathesis"
[ -x "$SCHEMATHESIS" ] || fail "schemathesis not installed (run scripts/setup)"
export TANDEM_ADMIN_PASSWORD=schemathesis-admin
start_tandem $NG $HTTP --sip 127.0.0.1:25360
base="http://127.0.0.1:$HTTP"
admin=$(curl -fsS -X POST "$base/api/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS -X POST "$base/api/v1/tenants" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"acme","domain":"acme.test"}' >/dev/null
tenant=$(curl -fsS -X POST "$base/api/v1/tenants/acme/tokens" -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d '{"name":"fuzz","role":"tenant_admin"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
cd "$WORK"
for who in tenant admin; do
  token=${!who}
  echo "--- schemathesis as $who"
  # Positive and negative examples; stateful phase off (random deletes of the token in use
  # would only test that revocation works, which the Rust suite does).
  "$SCHEMATHESIS" run "$base/api/v1/openapi.json" --url "$base" -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 \
    --no-color >"schemathesis-$who.log" 2>&1 \
    || fail "schemathesis as $who: $(tail -60 "schemathesis-$who.log")"
  tail -5 "schemathesis-$who.log"
done
grep -q 'panicked' "$WORK/tandem.log" && fail "tandem panicked: $(grep -m3 panicked "$WORK/tandem.log")"
echo "ok: schemathesis found no server errors or schema violations"
