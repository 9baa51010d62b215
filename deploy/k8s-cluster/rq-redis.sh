#!/usr/bin/env bash
# RQ's own Redis, made highly available by Sentinel (§14; OPERATIONS.md, "RQ's Redis with
# Sentinel"): a master and replicas (`redis`) watched by three Sentinels (`sentinel`).
# Hostnames everywhere (Redis >= 6.2): replicas announce theirs, the Sentinels resolve and
# announce names, so what they report survives pod restarts and resolves from any namespace.
#
#   rq-redis.sh redis [redis-server option ...]   run one Redis (execs redis-server)
#   rq-redis.sh sentinel [option ...]             run one Sentinel (execs redis-server)
#
# Environment:
#   SELF          this instance's name as the others (and KEDA) reach it
#   MASTER_NAME   the Sentinel master name, as in RQ_REDIS_URL (`.../<name>/0`)
#   SEED_MASTER   the Redis that is master on the very first start (host)
#   SENTINELS     every Sentinel as host:port, space-separated
#   QUORUM        Sentinels that must agree the master is down (default 2)
#   REDIS_CONF    the shared redis.conf (default /usr/local/etc/redis/redis.conf)
#   DATA_DIR      (default /data; the Sentinel keeps its rewritten sentinel.conf there)
#   REDIS_PORT    (default 6379)     SENTINEL_PORT (default 26379)
set -euo pipefail

REDIS_CONF=${REDIS_CONF:-/usr/local/etc/redis/redis.conf}
DATA_DIR=${DATA_DIR:-/data}
REDIS_PORT=${REDIS_PORT:-6379}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
QUORUM=${QUORUM:-2}
: "${SELF:?set SELF to the name the others reach this instance by}"
: "${MASTER_NAME:?set MASTER_NAME}" "${SEED_MASTER:?set SEED_MASTER}" "${SENTINELS:?set SENTINELS}"

# The master as the Sentinels know it ("host port"), or nothing if none answers.
sentinels_master() {
    local sentinel reply
    for sentinel in $SENTINELS; do
        [[ $sentinel == "$SELF:$SENTINEL_PORT" ]] && continue
        reply=$(timeout 3 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
            sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || continue
        reply=$(printf '%s' "$reply" | tr '\n' ' ')
        if [[ $reply =~ ^([^[:space:]]+)\ ([0-9]+) ]]; then
            echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
            return 0
        fi
    done
    return 0
}

wait_resolvable() {
    for _ in $(seq 1 60); do
        getent ahosts "$1" >/dev/null && return 0
        echo "waiting for $1 to resolve"
        sleep 2
    done
}

redis() {
    # Follow the master the Sentinels name (after a failover it is not SEED_MASTER); they
    # may still be starting, so ask for a while before trusting SEED_MASTER.
    local master="" args
    for _ in $(seq 1 10); do
        master=$(sentinels_master)
        [[ -n $master ]] && break
        sleep 2
    done
    master=${master:-"$SEED_MASTER $REDIS_PORT"}
    args=(--port "$REDIS_PORT" --dir "$DATA_DIR" --replica-announce-ip "$SELF")
    if [[ $master != "$SELF $REDIS_PORT" ]]; then
        echo "starting as a replica of $master"
        wait_resolvable "${master% *}"
        args+=(--replicaof "${master% *}" "${master#* }")
    else
        echo "starting as the master"
    fi
    exec redis-server "$REDIS_CONF" "${args[@]}" "$@"
}

sentinel() {
    local conf=$DATA_DIR/sentinel.conf master host
    if [[ ! -s $conf ]]; then
        # First start: the master the other Sentinels watch, else SEED_MASTER. Later starts
        # keep the file Sentinel rewrote (current master, epochs, known peers).
        master=$(sentinels_master)
        master=${master:-"$SEED_MASTER $REDIS_PORT"}
        cat >"$conf" <<EOF
port $SENTINEL_PORT
dir $DATA_DIR
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port $SENTINEL_PORT
sentinel monitor $MASTER_NAME $master $QUORUM
sentinel down-after-milliseconds $MASTER_NAME 5000
sentinel failover-timeout $MASTER_NAME 60000
sentinel parallel-syncs $MASTER_NAME 1
EOF
    fi
    # Sentinel refuses to start while the master's name does not resolve yet.
    host=$(sed -n "s/^sentinel monitor $MASTER_NAME \([^ ]*\) .*/\1/p" "$conf")
    [[ -z $host ]] || wait_resolvable "$host"
    exec redis-server "$conf" --sentinel "$@"
}

case ${1:-} in
    redis) shift && redis "$@" ;;
    sentinel) shift && sentinel "$@" ;;
    *)
        echo "usage: $0 redis [redis-server option ...] | sentinel [option ...]" >&2
        exit 2
        ;;
esac
