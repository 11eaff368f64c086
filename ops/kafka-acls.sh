#!/usr/bin/env bash
# Kafka ACLs for a production cluster (SASL or mTLS principals). The local open stack runs
# without authentication and needs none of this; `ops/stack up --secure` applies this script
# to its secured broker, and tests/integration/test_secure_broker.py checks each rule there.
#
# Whoever can write a topic the worker reads decides what the worker believes: a changelog
# rebuilds detector state after a restart (and one record whose key Faust cannot decode stops
# its recovery for good), misuse.feedback allowlists accounts. So only the
# worker writes its internal topics and changelogs, only the API gateway writes usage events,
# and only the review service writes analyst decisions. (The state codec never runs code from
# a changelog, whoever wrote it; these ACLs keep anyone from forging detector state at all.)
#
# Usage: BOOTSTRAP=kafka:9093 CONFIG=admin.properties ops/kafka-acls.sh
# Principals and names are read from the environment; the defaults match `misuse setup`.
# kafka-acls.sh (Kafka's own script) must be on PATH. Adding an ACL that exists is a no-op, so
# the script may run again (for another prefix, say).
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:?the cluster, host:port}
CONFIG=${CONFIG:?an admin client config (security.protocol, sasl.jaas.config, ...)}
WORKER=${WORKER:-User:misuse-worker}          # runs `misuse worker`
GATEWAY=${GATEWAY:-User:api-gateway}          # produces usage events
REVIEW=${REVIEW:-User:review-service}         # produces analyst decisions
PREFIX=${MISUSE_TOPIC_PREFIX:-}               # as the worker's MISUSE_TOPIC_PREFIX
APP_ID=${MISUSE_APP_ID:-misuse-detector}      # as the worker's MISUSE_APP_ID: group and changelogs

acl() { kafka-acls.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" "$@"; }

# The worker: reads and writes every topic of its own (prefix), its changelogs and its group.
acl --add --allow-principal "$WORKER" --operation Read --operation Write --operation Describe \
    --topic "${PREFIX}misuse." --resource-pattern-type prefixed
acl --add --allow-principal "$WORKER" --operation Read --operation Write --operation Describe \
    --operation Create --topic "${APP_ID}-" --resource-pattern-type prefixed
acl --add --allow-principal "$WORKER" --operation Read --topic "${PREFIX}api.usage"
acl --add --allow-principal "$WORKER" --operation Read --group "$APP_ID"
# ...but never analyst decisions: a deny wins over the prefixed allow above.
acl --add --deny-principal "$WORKER" --operation Write --topic "${PREFIX}misuse.feedback"

# The gateway writes usage events, nothing else.
acl --add --allow-principal "$GATEWAY" --operation Write --operation Describe \
    --topic "${PREFIX}api.usage"

# The review service writes analyst decisions (the worker reads them), nothing else.
acl --add --allow-principal "$REVIEW" --operation Write --operation Describe \
    --topic "${PREFIX}misuse.feedback"

# With allow.everyone.if.no.acl.found=false on the brokers, nobody else writes any of these.
acl --list --topic "${PREFIX}misuse." --resource-pattern-type prefixed
