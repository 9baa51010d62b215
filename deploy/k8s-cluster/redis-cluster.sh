#!/usr/bin/env bash
# One node of the Redis Cluster that holds injixo-freshchat's data (§14; OPERATIONS.md,
# "Redis Cluster (§14)"). Used by deploy/k8s-cluster (as a ConfigMap) and by the compose
# profile `cluster` (mounted); runs in the redis image (bash, redis-cli, getent, timeout).
#
#   redis-cluster.sh start [redis-server option ...]  run this node (execs redis-server)
#   redis-cluster.sh ready      readiness: the cluster is ok here, a replica is in sync
#   redis-cluster.sh pre-stop   a master hands its slots to its replica before it stops
#   redis-cluster.sh create     form the cluster once all nodes answer; idempotent
#
# Environment:
#   ANNOUNCE_HOSTNAME  (start) the name clients reach this node by: the client (redis-py,
#                      KEDA) discovers the nodes under this name, so it must resolve for
#                      every one of them, from any namespace
#   ANNOUNCE_IP        (start, optional) this node's address on the cluster bus
#   REDIS_CONF         the shared redis.conf (default /usr/local/etc/redis/redis.conf)
#   DATA_DIR           AOF, RDB and nodes.conf (default /data)
#   REDIS_PORT         (default 6379; the cluster bus is REDIS_PORT + 10000)
#   CLUSTER_NODES      (create) every node as host:port, space-separated
#   CLUSTER_REPLICAS   (create) replicas per master (default 1)
set -euo pipefail

REDIS_CONF=${REDIS_CONF:-/usr/local/etc/redis/redis.conf}
DATA_DIR=${DATA_DIR:-/data}
REDIS_PORT=${REDIS_PORT:-6379}
TOTAL_SLOTS=16384

cli() { timeout 5 redis-cli -p "$REDIS_PORT" "$@"; }

# A pod (or container) gets a new IP when it is recreated, and nodes.conf keeps the peers'
# old ones: after all nodes restarted at once, none could reach another. The file also keeps
# each peer's announced hostname (`ip:port@cport,hostname[,aux=...]`), so look the current
# addresses up first. Best effort: a peer that does not resolve yet keeps its old address and
# is corrected by gossip once any node that knows the new one reaches this node.
refresh_peer_addresses() {
    local conf=$DATA_DIR/nodes.conf tmp line id addr rest hostport host ip
    [[ -s $conf ]] || return 0
    tmp=$(mktemp "$conf.XXXXXX")
    while IFS= read -r line; do
        read -r id addr rest <<<"$line"
        if [[ $id != vars && $addr == *,* && $rest != myself* ]]; then
            hostport=${addr%%,*}
            host=${addr#*,}
            host=${host%%,*}
            ip=""
            if [[ -n $host ]]; then
                read -r ip _ < <(getent hosts "$host" || true) || true
            fi
            if [[ -n $ip ]]; then
                line="$id $ip:${hostport##*:}${addr#"$hostport"} $rest"
            fi
        fi
        printf '%s\n' "$line"
    done <"$conf" >"$tmp"
    mv "$tmp" "$conf"
}

start() {
    : "${ANNOUNCE_HOSTNAME:?set ANNOUNCE_HOSTNAME to the name clients reach this node by}"
    refresh_peer_addresses
    local args=(
        --port "$REDIS_PORT"
        --dir "$DATA_DIR"
        --cluster-enabled yes
        --cluster-config-file nodes.conf
        # A master unreachable this long is failed over to its replica.
        --cluster-node-timeout 5000
        # Clients get hostnames (CLUSTER SLOTS/SHARDS), which survive pod restarts; IPs don't.
        --cluster-announce-hostname "$ANNOUNCE_HOSTNAME"
        --cluster-preferred-endpoint-type hostname
    )
    if [[ -n ${ANNOUNCE_IP:-} ]]; then
        args+=(--cluster-announce-ip "$ANNOUNCE_IP")
    fi
    # redis.conf (appendonly yes, appendfsync always, noeviction, ...) first, then these.
    exec redis-server "$REDIS_CONF" "${args[@]}" "$@"
}

ready() {
    local info
    info=$(cli cluster info) || return 1
    [[ $info == *cluster_state:ok* ]] || return 1
    info=$(cli info replication) || return 1
    [[ $info != *role:slave* || $info == *master_link_status:up* ]]
}

# CLUSTER FAILOVER (without FORCE) on the replica: the master stops taking writes, the
# replica catches up to its offset, then takes over. Nothing acknowledged is lost, and the
# clients are moved (MOVED) instead of waiting cluster-node-timeout for an automatic failover.
pre_stop() {
    local role myid id addr flags rest target=""
    role=$(cli role | head -n 1) || return 0
    [[ $role == master ]] || return 0
    myid=$(cli cluster myid) || return 0
    while read -r id addr flags rest; do
        if [[ -n $id && $flags != *fail* && $rest == *connected* ]]; then
            target=${addr%%@*}
            break
        fi
    done < <(cli cluster replicas "$myid" || true)
    [[ -n $target ]] || return 0
    echo "handing the slots of $myid to its replica $target"
    timeout 5 redis-cli -h "${target%:*}" -p "${target##*:}" cluster failover || return 0
    for _ in $(seq 1 40); do
        [[ $(cli role | head -n 1) == slave ]] && return 0
        sleep 0.5
    done
}

field() { # field NAME TEXT: the value of `NAME:value` in an INFO-style reply, or nothing
    if [[ $2 =~ $1:([^[:space:]]+) ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    fi
}

create() {
    : "${CLUSTER_NODES:?set CLUSTER_NODES to every node as host:port}"
    local replicas=${CLUSTER_REPLICAS:-1} node host port ip info known slots
    local addrs=() fresh=0 formed=0 partial=()
    for node in $CLUSTER_NODES; do
        host=${node%:*}
        port=${node##*:}
        until [[ $(timeout 5 redis-cli -h "$host" -p "$port" ping 2>/dev/null) == PONG* ]]; do
            echo "waiting for $node"
            sleep 2
        done
        # CLUSTER MEET takes IP addresses only.
        ip=""
        read -r ip _ < <(getent hosts "$host" || true) || true
        [[ -n $ip ]] || { echo "cannot resolve $host" >&2; return 1; }
        addrs+=("$ip:$port")
        info=$(timeout 5 redis-cli -h "$host" -p "$port" cluster info)
        known=$(field cluster_known_nodes "$info")
        slots=$(field cluster_slots_assigned "$info")
        if [[ $known == 1 && $slots == 0 ]]; then
            fresh=$((fresh + 1))
        elif [[ $slots == "$TOTAL_SLOTS" && $(field cluster_state "$info") == ok ]]; then
            formed=$((formed + 1))
        else
            partial+=("$node (known nodes $known, slots $slots)")
        fi
    done
    if ((formed > 0 && ${#partial[@]} == 0)); then
        echo "the cluster exists already ($formed of ${#addrs[@]} nodes in it): nothing to do"
        if ((fresh > 0)); then
            echo "WARNING: $fresh node(s) are empty and in no cluster (a lost volume?): add them" \
                "with redis-cli --cluster add-node <node> <any member> --cluster-slave" >&2
        fi
        return 0
    fi
    if ((${#partial[@]} > 0)); then
        printf 'not creating: a cluster is half formed or not ok: %s\n' "${partial[@]}" >&2
        echo "inspect with redis-cli --cluster check <node>; OPERATIONS.md, Redis Cluster" >&2
        return 1
    fi
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes
    for node in $CLUSTER_NODES; do
        host=${node%:*}
        port=${node##*:}
        for _ in $(seq 1 60); do
            info=$(timeout 5 redis-cli -h "$host" -p "$port" cluster info || true)
            [[ $(field cluster_state "$info") == ok ]] && continue 2
            sleep 1
        done
        echo "$node: cluster_state is not ok after 60 s" >&2
        return 1
    done
    echo "cluster created: ${#addrs[@]} nodes, $replicas replica(s) per master"
}

case ${1:-} in
    start) shift && start "$@" ;;
    ready) ready ;;
    pre-stop) pre_stop ;;
    create) create ;;
    *)
        echo "usage: $0 start [redis-server option ...] | ready | pre-stop | create" >&2
        exit 2
        ;;
esac
