#!/usr/bin/env bash
# A three-node RabbitMQ cluster on one machine, beside any broker already running there, for
# trying failover by hand. The same setup as tests/integration/rigs/cluster.py; see cluster.md.
#
#   local-cluster.sh start  BASE_DIR               boot the nodes, join 2 and 3 to 1, print URLs
#   local-cluster.sh stop   BASE_DIR               stop every node (cleanly, else SIGKILL)
#   local-cluster.sh status BASE_DIR               cluster_status as the first node sees it
#   local-cluster.sh ctl    BASE_DIR NODE ARGS...  rabbitmqctl -n NODE@localhost ARGS...
#   local-cluster.sh queues BASE_DIR NODE ARGS...  rabbitmq-queues -n NODE@localhost ARGS...
#
# BASE_DIR holds everything: home/.erlang.cookie (the cluster's own cookie) and, per node, its
# rabbitmq.conf, mnesia and log directories. Nothing outside it is written. 'start' again on
# the same BASE_DIR restarts the same cluster; remove BASE_DIR after 'stop' to forget it.
#
# Environment: NODES (default "bwtest1 bwtest2 bwtest3"), FIRST_PORT (AMQP port of the first
# node, default 5701; taken ports are skipped), RABBITMQ_SCRIPTS_DIR (the real rabbitmq-server
# and rabbitmqctl; default /usr/lib/rabbitmq/bin, Debian's: /usr/sbin/rabbitmq-server is a
# wrapper that, for root, switches to the rabbitmq user and its HOME, i.e. to the system
# broker's cookie).
set -euo pipefail

NODES=${NODES:-"bwtest1 bwtest2 bwtest3"}
FIRST_PORT=${FIRST_PORT:-5701}
DIST_OFFSET=20000 # RabbitMQ's own rule: distribution port = AMQP port + 20000
HOST=localhost
TAKEN=()
ENVV=()

die() {
    echo "local-cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,9p' "$0" | cut -c3- >&2
    exit 2
}

scripts_dir() {
    if [[ -n ${RABBITMQ_SCRIPTS_DIR:-} ]]; then
        echo "$RABBITMQ_SCRIPTS_DIR"
    elif [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
        echo /usr/lib/rabbitmq/bin
    elif command -v rabbitmq-server >/dev/null; then
        dirname "$(command -v rabbitmq-server)"
    else
        die "rabbitmq-server not found: install RabbitMQ or set RABBITMQ_SCRIPTS_DIR"
    fi
}

SCRIPTS=$(scripts_dir)
[[ -x $SCRIPTS/rabbitmq-server && -x $SCRIPTS/rabbitmqctl ]] ||
    die "no executable rabbitmq-server and rabbitmqctl in $SCRIPTS"

# True when something accepts connections on 127.0.0.1:$1.
port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port=$1
    while port_taken "$port" || [[ " ${TAKEN[*]} " == *" $port "* ]]; do
        port=$((port + 1))
    done
    TAKEN+=("$port")
    FREE_PORT=$port
}

# True when epmd knows a node called $1 (short name) on this machine.
node_registered() {
    command -v epmd >/dev/null && epmd -names 2>/dev/null | grep -q "^name $1 at port "
}

# ENVV: the environment of every command below (run with env -i): the cluster's HOME, so its
# cookie, and no RABBITMQ_* or ERL_* of the caller.
cli_env() {
    local base=$1 node=$2
    ENVV=("PATH=$PATH" "HOME=$base/home" "LC_ALL=C.UTF-8"
        "RABBITMQ_CONF_ENV_FILE=$base/$node/rabbitmq-env.conf")
}

cli() {
    local base=$1 tool=$2 node=${3%@*}
    shift 3
    cli_env "$base" "$node"
    env -i "${ENVV[@]}" "$SCRIPTS/$tool" -n "$node@$HOST" "$@"
}

write_cookie() {
    local home=$1/home
    mkdir -p "$home"
    if [[ ! -f $home/.erlang.cookie ]]; then
        # Before any erl runs with this HOME: Erlang writes a random cookie into a HOME without.
        (umask 277 && od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$home/.erlang.cookie")
    fi
    chmod 400 "$home/.erlang.cookie"
}

boot_node() {
    local base=$1 node=$2 amqp=$3 dist=$4
    local dir=$base/$node
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
# Written by local-cluster.sh for $node@$HOST only.
listeners.tcp.1 = 127.0.0.1:$amqp
loopback_users.guest = true
EOF
    echo "# Empty on purpose: local-cluster.sh sets RABBITMQ_* itself." >"$dir/rabbitmq-env.conf"
    echo "[]." >"$dir/enabled_plugins" # no management plugin: no clash on port 15672
    echo "$amqp $dist" >"$dir/ports"
    rm -f "$dir/rabbit.pid"
    cli_env "$base" "$node"
    ENVV+=(
        "RABBITMQ_NODENAME=$node@$HOST"
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
        "RABBITMQ_NODE_PORT=$amqp"
        "RABBITMQ_DIST_PORT=$dist"
        "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf"
        "RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config"
        "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins"
        "RABBITMQ_MNESIA_BASE=$dir/mnesia"
        "RABBITMQ_LOG_BASE=$dir/log"
        "RABBITMQ_PID_FILE=$dir/rabbit.pid"
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1} -rig_node $node@$HOST"
        "ERL_EPMD_ADDRESS=127.0.0.1"
    )
    env -i "${ENVV[@]}" "$SCRIPTS/rabbitmq-server" -detached >>"$dir/log/console.log" 2>&1
}

# The node names of BASE_DIR: the ones it was first started with, else NODES.
read_nodes() {
    local base=$1 names=$NODES
    [[ -f $base/nodes ]] && names=$(<"$base/nodes")
    read -r -a CLUSTER_NODES <<<"$names"
    ((${#CLUSTER_NODES[@]} > 0)) || die "no node names"
}

wait_booted() {
    local base=$1 node=$2 deadline=$(($(date +%s) + 180))
    # 'rabbitmqctl wait PIDFILE' would wait its whole timeout for a node that died early.
    until cli "$base" rabbitmqctl "$node" await_startup --timeout 10 >/dev/null 2>&1; do
        if (($(date +%s) > deadline)); then
            die "$node@$HOST did not start in 180 s; see $base/$node/log/"
        fi
        if [[ -f $base/$node/rabbit.pid ]] && ! kill -0 "$(<"$base/$node/rabbit.pid")" 2>/dev/null; then
            die "$node@$HOST exited while starting; see $base/$node/log/"
        fi
        sleep 1
    done
}

start() {
    local base node first started index=0
    mkdir -p "$1"
    base=$(cd "$1" && pwd)
    write_cookie "$base"
    read_nodes "$base"
    echo "${CLUSTER_NODES[*]}" >"$base/nodes"
    started=$(date +%s)
    for node in "${CLUSTER_NODES[@]}"; do
        if node_registered "$node"; then
            die "a node called $node already runs here (local-cluster.sh stop $base, or other NODES)"
        fi
    done
    for node in "${CLUSTER_NODES[@]}"; do
        free_port $((FIRST_PORT + index))
        local amqp=$FREE_PORT
        free_port $((amqp + DIST_OFFSET))
        boot_node "$base" "$node" "$amqp" "$FREE_PORT"
        index=$((index + 1))
    done
    for node in "${CLUSTER_NODES[@]}"; do
        wait_booted "$base" "$node"
    done
    echo "booted ${#CLUSTER_NODES[@]} nodes in $(($(date +%s) - started)) s"
    first=${CLUSTER_NODES[0]}
    for node in "${CLUSTER_NODES[@]:1}"; do
        [[ -f $base/$node/joined ]] && continue # a restart: the node remembers its cluster
        cli "$base" rabbitmqctl "$node" stop_app
        cli "$base" rabbitmqctl "$node" join_cluster "$first@$HOST"
        cli "$base" rabbitmqctl "$node" start_app
        touch "$base/$node/joined"
    done
    cli "$base" rabbitmqctl "$first" cluster_status
    echo
    echo "ready in $(($(date +%s) - started)) s; broker URLs (guest works: loopback only):"
    for node in "${CLUSTER_NODES[@]}"; do
        local amqp dist
        read -r amqp dist <"$base/$node/ports"
        echo "  amqp://guest:guest@127.0.0.1:$amqp/   $node@$HOST (distribution port $dist)"
    done
    echo "CLI: $0 ctl $base $first cluster_status"
}

stop() {
    local base node pid i
    base=$(cd "$1" && pwd)
    read_nodes "$base"
    # The first node last: after a full stop it is the one to start first.
    for ((i = ${#CLUSTER_NODES[@]} - 1; i >= 0; i--)); do
        node=${CLUSTER_NODES[i]}
        [[ -f $base/$node/rabbit.pid ]] || continue
        pid=$(<"$base/$node/rabbit.pid")
        if kill -0 "$pid" 2>/dev/null; then
            cli_env "$base" "$node"
            # 'stop PIDFILE' returns once the node's process has exited.
            if ! timeout 60 env -i "${ENVV[@]}" "$SCRIPTS/rabbitmqctl" -n "$node@$HOST" \
                stop "$base/$node/rabbit.pid"; then
                echo "$node@$HOST did not stop cleanly: SIGKILL $pid" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$base/$node/rabbit.pid"
    done
}

command=${1:-}
[[ -n $command && -n ${2:-} ]] || usage
case $command in
start) start "$2" ;;
stop) stop "$2" ;;
status)
    read_nodes "$2"
    cli "$(cd "$2" && pwd)" rabbitmqctl "${CLUSTER_NODES[0]}" cluster_status
    ;;
ctl | queues)
    [[ -n ${3:-} ]] || usage
    tool=rabbitmqctl
    [[ $command == queues ]] && tool=rabbitmq-queues
    cli "$(cd "$2" && pwd)" "$tool" "$3" "${@:4}"
    ;;
*) usage ;;
esac
