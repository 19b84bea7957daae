#!/bin/sh
# The container's entrypoint: runs raftgated with the arguments given. In a Kubernetes
# StatefulSet (RAFTGATE_STATEFULSET=1) it derives the stable node id from the pod's
# ordinal (pod raftgate-0 is node 1), bootstraps the cluster on pod 0 and joins through
# pod 0 on the others; both are ignored once the data directory holds a cluster, so a
# restarted pod simply comes back.
set -eu

if [ "${RAFTGATE_STATEFULSET:-0}" = 1 ]; then
    pod=${POD_NAME:?POD_NAME must be set from metadata.name}
    ordinal=${pod##*-}
    case $ordinal in
        ''|*[!0-9]*) echo "raftgate-entrypoint: cannot read an ordinal from pod name $pod" >&2; exit 2 ;;
    esac
    id=$((ordinal + 1))
    service=${RAFTGATE_SERVICE:?RAFTGATE_SERVICE must name the headless Service}
    namespace=${POD_NAMESPACE:?POD_NAMESPACE must be set from metadata.namespace}
    self="$pod.$service.$namespace.svc.cluster.local"
    first="${pod%-*}-0.$service.$namespace.svc.cluster.local"
    set -- --node-id "$id" \
        --advertise-raft-addr "$self:9800" --advertise-admin-addr "$self:9900" \
        --tls-cert "/etc/raftgate/nodes/node-$id.pem" --tls-key "/etc/raftgate/nodes/node-$id-key.pem" \
        "$@"
    if [ "$ordinal" = 0 ]; then
        set -- --bootstrap "$@"
    else
        set -- --join "$first:9900" "$@"
    fi
fi
exec /usr/local/bin/raftgated "$@"
