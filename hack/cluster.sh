#!/usr/bin/env bash
# A real two-worker Kubernetes on this machine, inside network namespaces it
# creates (docs/cluster.md): a "switch" netns with a bridge, a control-plane
# netns (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and two
# node netns (node-a, node-b), each with its own containerd, kubelet and
# kube-proxy. The host's own interfaces, addresses, routes and iptables are
# never touched. Everything it starts is recorded in the state dir and `down`
# removes it all.
#
#   hack/cluster.sh up | down | status | is-up | kubeconfig
#   hack/cluster.sh kubectl ARGS...      kubectl against the cluster
#   hack/cluster.sh helm ARGS...         helm against the cluster
#   hack/cluster.sh exec NODE CMD...     a command in a netns (node-a, node-b, cp, switch)
#   hack/cluster.sh import ARCHIVE...    OCI archives into both nodes' containerd
#   hack/cluster.sh node-crash NODE      the node's cable pulled and power cut (all its processes SIGKILLed)
#   hack/cluster.sh node-boot NODE       the node back: runtime state cleared as a reboot would, agents restarted
#   hack/cluster.sh apiserver-stop       kube-apiserver stopped (an outage of the control plane; etcd keeps its state)
#   hack/cluster.sh apiserver-start      kube-apiserver started again
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
S=${SIPHA_CLUSTER_DIR:-/tmp/sipha-cluster}
NODES=(node-a node-b)
# Addresses: all from 198.18.0.0/15 (benchmarking range). On the bridge:
# cp .2, nodes .11/.12; .100-.199 are left for VIPs, .200-.250 for test clients.
NET=198.18.8
CP_IP=$NET.2
declare -A NODE_IP=([node-a]=$NET.11 [node-b]=$NET.12)
CLUSTER_CIDR=198.19.0.0/17   # pod CIDR; kube-controller-manager gives each node a /24
SERVICE_CIDR=198.19.128.0/20
API_SVC_IP=198.19.128.1
DNS_IP=198.19.128.10
NS_SW=sipha-sw NS_CP=sipha-cp
ns_of() { case $1 in cp) echo $NS_CP ;; switch | sw) echo $NS_SW ;; *) echo "sipha-$1" ;; esac; }

COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
PAUSE_IMAGE=sipha.local/pause:3.10
COREDNS_IMAGE=sipha.local/coredns:$COREDNS_VERSION
T0=$(date +%s)
say() { echo "cluster: $* ($(($(date +%s) - T0)) s)" >&2; }
die() {
  echo "cluster: $*" >&2
  exit 1
}

bin_dir() {
  if [ -z "${BIN:-}" ]; then
    BIN=$(COREDNS_VERSION=$COREDNS_VERSION bash "$ROOT/hack/build-k8s.sh" | tail -1)
  fi
}
kc() { nsenter --net=/run/netns/$NS_CP -- "$BIN/kubectl" --kubeconfig "$S/kubeconfig" "$@"; }

# Retries "$@" every 0.5 s until it succeeds or TIMEOUT seconds pass.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local end=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${timeout}s waiting for $what"
    check_alive
    sleep 0.5
  done
}

# --- processes: started detached, recorded as "PID EXE", ended by PID --------

start() { # NAME NETNS NODE|"" CMD...
  local name=$1 netns=$2 node=$3
  shift 3
  local ns=("--net=/run/netns/$netns")
  # Node processes also share the node's mount and UTS namespaces.
  [ -n "$node" ] && ns+=(--mount="$S/$node/mnt" --uts="$S/$node/uts")
  # No job control here, so the background job is not a group leader and
  # setsid execs in place: $! is the PID of the program itself.
  setsid nsenter "${ns[@]}" -- "$@" >"$S/logs/$name.log" 2>&1 </dev/null &
  echo "$! $1" >"$S/pids/$name"
  cpu_domain "$!" "${node:-cp}"
  disown "$!" # (no "Killed" job notices from this shell when down ends it)
}

pid_alive() { # NAME: prints the PID when it is the process we started
  local f=$S/pids/$1 pid exe
  [ -f "$f" ] || return 1
  read -r pid exe <"$f"
  # (setsid/nsenter: caught in the instant before they exec the program)
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
    "$(readlink -f "$exe")" | */setsid | */nsenter) echo "$pid" ;;
    *) return 1 ;;
  esac
}

check_alive() {
  local f
  [ -d "$S/pids" ] || return 0
  for f in "$S"/pids/*; do
    [ -e "$f" ] || continue
    pid_alive "$(basename "$f")" >/dev/null || {
      tail -n 30 "$S/logs/$(basename "$f").log" >&2 || true
      die "$(basename "$f") exited (log: $S/logs/$(basename "$f").log)"
    }
  done
}

live() { [ -d "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; } # a zombie has ended

stop_pid() { # PID...: SIGTERM, then SIGKILL after 2 s (nothing here needs a clean exit)
  local p left=("$@")
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 70); do
    [ "$i" = 20 ] && for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    left=()
    for p in "$@"; do live "$p" && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  echo "cluster: still running after SIGKILL: ${left[*]}" >&2
}

stop_named() { # NAME...
  local n pids=()
  for n in "$@"; do
    local p
    p=$(pid_alive "$n") && pids+=("$p")
    rm -f "$S/pids/$n"
  done
  [ ${#pids[@]} -eq 0 ] || stop_pid "${pids[@]}"
}

# --- cgroups: each node's kubelet gets its own cgroupRoot in every hierarchy --

cgroup_dirs() { # the v1 hierarchies (and the unified one) mounted here
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

cgroup_create() { # NODE
  local h d
  for h in $(cgroup_dirs); do
    d=$h/sipha-$1
    mkdir -p "$d"
    # A cpuset child starts empty and cannot take tasks: copy the parent's.
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$h/cpuset.mems" >"$d/cpuset.mems"
    fi
  done
}

# Each machine of the cluster a CPU domain of its own, as separate machines would be:
# sipha-cp (the control plane) and sipha-NODE, which holds the node's kubepods (its
# kubelet's cgroupRoot) beside system (its kubelet, containerd and shims, kube-proxy),
# as a systemd machine holds kubepods.slice beside system.slice. Otherwise each agent
# and control-plane process is a CPU entity of its own (an autogroup) at the top, of
# the same weight as a node's every pod together: after a Kamailio kill, the API
# server's, the kubelets' and the container restart's work pushed the new master's
# sidecar off the CPU for tens of ms (session 18, perf sched; docs/cluster.md).
# The cpu hierarchy only (v1); elsewhere the processes stay where they are.
cpu_hierarchies() {
  local h
  for h in $(cgroup_dirs); do [ -f "$h/cpu.shares" ] && echo "$h"; done
  return 0
}

cpu_domain() { # PID cp|NODE
  local h d
  for h in $(cpu_hierarchies); do
    if [ "$2" = cp ]; then d=$h/sipha-cp; else d=$h/sipha-$2/system; fi
    mkdir -p "$d"
    echo "$1" >"$d/cgroup.procs" 2>/dev/null || true # (ended already: its start fails loudly elsewhere)
  done
}

cpu_domain_remove_cp() {
  local h
  for h in $(cpu_hierarchies); do
    [ -d "$h/sipha-cp" ] || continue
    for _ in $(seq 50); do rmdir "$h/sipha-cp" 2>/dev/null && break; sleep 0.1; done
    [ ! -d "$h/sipha-cp" ] || echo "cluster: could not remove $h/sipha-cp" >&2
  done
}

cgroup_procs() { # NODE: PIDs in the node's trees
  local h
  for h in $(cgroup_dirs); do
    if [ -d "$h/sipha-$1" ]; then find "$h/sipha-$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}

cgroup_remove() { # NODE
  local h pids
  for _ in $(seq 100); do
    pids=$(cgroup_procs "$1")
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  for h in $(cgroup_dirs); do
    [ -d "$h/sipha-$1" ] || continue
    for _ in $(seq 50); do
      find "$h/sipha-$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$h/sipha-$1" ] || break
      sleep 0.1
    done
    [ ! -d "$h/sipha-$1" ] || echo "cluster: could not remove $h/sipha-$1" >&2
  done
}

# --- images: OCI archives built without Docker (hack/cluster/oci-image.sh) ------

# shellcheck source=hack/cluster/oci-image.sh
. "$ROOT/hack/cluster/oci-image.sh"

build_images() {
  local r=$S/images/rootfs
  mkdir -p "$r/pause" "$r/coredns/etc"
  gcc -static -Os -s -o "$r/pause/pause" "$ROOT/hack/cluster/pause.c"
  oci_image "$PAUSE_IMAGE" "$r/pause" "$S/images/pause.tar" /pause
  cp "$BIN/coredns-$COREDNS_VERSION" "$r/coredns/coredns"
  echo 'nobody:x:65534:65534:nobody:/:/coredns' >"$r/coredns/etc/passwd"
  oci_image "$COREDNS_IMAGE" "$r/coredns" "$S/images/coredns.tar" /coredns
  rm -rf "$r"
}

import_images() { # ARCHIVE...: into every node's containerd
  local n a
  for n in "${NODES[@]}"; do
    for a in "$@"; do
      ctr --address "$S/$n/containerd.sock" -n k8s.io images import "$a" >/dev/null
    done
  done
}

# --- pki, tokens, kubeconfigs ---------------------------------------------------

make_pki() {
  local p=$S/pki
  mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt \
      -days 30 -subj /CN=sipha-cluster-ca 2>/dev/null
    sign() { # NAME SUBJ [SAN]
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      local ext=$1.ext
      echo "basicConstraints=CA:FALSE" >"$ext"
      echo "keyUsage=critical,digitalSignature,keyEncipherment" >>"$ext"
      if [ -n "${3:-}" ]; then
        echo "extendedKeyUsage=serverAuth" >>"$ext"
        echo "subjectAltName=$3" >>"$ext"
      else
        echo "extendedKeyUsage=clientAuth" >>"$ext"
      fi
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" -extfile "$ext" 2>/dev/null
      rm -f "$1.csr" "$ext"
    }
    sign apiserver /CN=kube-apiserver \
      "IP:$CP_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # apiserver -> kubelet (logs, exec): system:masters passes the kubelets' webhook authorization.
    sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  # Token users; the Node authorizer and the default RBAC bindings know these names.
  local t
  : >"$p/tokens.csv"
  local u id user group
  for u in "admin|admin|system:masters" "kcm|system:kube-controller-manager|" "scheduler|system:kube-scheduler|" \
    "proxy|system:kube-proxy|" "node-a|system:node:node-a|system:nodes" "node-b|system:node:node-b|system:nodes"; do
    IFS='|' read -r id user group <<<"$u"
    t=$(openssl rand -hex 24)
    echo "$t,$user,$user${group:+,\"$group\"}" >>"$p/tokens.csv"
    kubeconfig_file "$S/kubeconfigs/$id" "$t"
  done
  cp "$S/kubeconfigs/admin" "$S/kubeconfig"
}

kubeconfig_file() { # PATH TOKEN
  mkdir -p "$(dirname "$1")"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sipha
  cluster:
    server: https://$CP_IP:6443
    certificate-authority: $S/pki/ca.crt
users:
- name: sipha
  user:
    token: $2
contexts:
- name: sipha
  context: {cluster: sipha, user: sipha, namespace: default}
current-context: sipha
EOF
}

# --- network ----------------------------------------------------------------------

make_network() {
  ip netns add $NS_SW
  ip -n $NS_SW link set lo up
  ip -n $NS_SW link add br0 type bridge
  ip -n $NS_SW link set br0 up
  # The switch is plain L2: frames crossing it do not go through its iptables.
  ip netns exec $NS_SW sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0
  local n ns ip
  for n in cp "${NODES[@]}"; do
    ns=$(ns_of "$n")
    ip=${NODE_IP[$n]:-$CP_IP}
    ip netns add "$ns"
    # Both veth ends are created directly in their namespaces: the host's never holds one.
    ip link add eth0 netns "$ns" type veth peer name "$n" netns $NS_SW
    ip -n $NS_SW link set "$n" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  for n in "${NODES[@]}"; do
    ns=$(ns_of "$n")
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    # Same-node Service traffic (pod -> ClusterIP -> pod on the same cni0
    # bridge) must be seen by kube-proxy's iptables rules: br_netfilter is built
    # into this kernel and its switch is per netns; turned on in the nodes only.
    ip netns exec "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=1
    # Locally generated packets to a ClusterIP need a route before kube-proxy's
    # OUTPUT DNAT applies; there is no default route (nothing outside exists).
    ip -n "$ns" route add $SERVICE_CIDR dev eth0
  done
}

# --- node namespaces (mount + UTS), containerd, kubelet, kube-proxy -------------

make_node() { # NODE
  local n=$1 N=$S/$1
  mkdir -p "$N"/{containerd/root,containerd/state,containerd/opt,cni/net.d,kubelet,pod-logs,run,var-lib,var-log,sysctl}
  touch "$N/mnt" "$N/uts"
  # A mount namespace of the node's own (private: nothing leaks to the host):
  # kubelet's volume mounts, containerd's rootfs and pod netns mounts live and
  # die with it. /run, /var/lib and /var/log are the node's own directories, so
  # /run/containerd, /var/lib/cni and /var/log/{pods,containers} never land on
  # the host. A UTS namespace gives hostNetwork pods the node's name.
  unshare --mount="$N/mnt" --uts="$N/uts" --propagation private true
  local fake="" k v
  # kubelet insists on these non-namespaced sysctls (it would rewrite them for
  # the whole machine). With protectKernelDefaults it only checks them, and in
  # the node's mount namespace it reads the values it wants from these files;
  # the machine's own settings stay as they are (containers get a fresh /proc).
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    k=${kv%=*} v=${kv#*=}
    echo "$v" >"$N/sysctl/${k//\//.}"
    fake+="mount --bind $N/sysctl/${k//\//.} /proc/sys/$k; "
  done
  nsenter --mount="$N/mnt" --uts="$N/uts" -- sh -ec "
    hostname $n
    # copies of other namespaces' handles would keep them alive: drop them here
    for m in $S/*/mnt $S/*/uts; do umount \$m 2>/dev/null || true; done
    umount -R /run/netns 2>/dev/null || true
    mount --bind $N/run /run
    mount --bind $N/var-lib /var/lib
    mount --bind $N/var-log /var/log
    $fake"
  cgroup_create "$n"

  cat >"$N/containerd.toml" <<EOF
version = 2
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$N/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/net.d"
EOF
  start "containerd-$n" "$(ns_of "$n")" "$n" /usr/bin/containerd --config "$N/containerd.toml"

  cat >"$N/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$N/containerd.sock
cgroupDriver: cgroupfs
# each node its own root, so the two kubelets never share /kubepods
cgroupRoot: /sipha-$n
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: true
address: ${NODE_IP[$n]}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $S/pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $N/resolv.conf
podLogsDir: $N/pod-logs
# a test machine's disk and memory are shared by two nodes: no evictions, no image GC
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
serializeImagePulls: false
EOF
  # dnsPolicy: Default pods (CoreDNS) get no upstream: nothing outside exists.
  echo "search ." >"$N/resolv.conf"
}

start_node_agents() { # NODE
  local n=$1 N=$S/$1
  start "kubelet-$n" "$(ns_of "$n")" "$n" "$BIN/kubelet" --config "$N/kubelet.yaml" \
    --kubeconfig "$S/kubeconfigs/$n" --root-dir "$N/kubelet" --hostname-override "$n" \
    --node-ip "${NODE_IP[$n]}" --node-labels "sipha.test/node=$n,topology.kubernetes.io/zone=zone-${n#node-}" --v=1
  cat >"$N/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $S/kubeconfigs/proxy}
mode: iptables
hostnameOverride: $n
clusterCIDR: $CLUSTER_CIDR
bindAddress: ${NODE_IP[$n]}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# 0 = leave the kernel's values alone (nf_conntrack_max is machine-wide)
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
  start "kube-proxy-$n" "$(ns_of "$n")" "$n" "$BIN/kube-proxy" --config "$N/kube-proxy.yaml" --v=1
}

node_podcidr() { kc get node "$1" -o jsonpath='{.spec.podCIDR}' 2>/dev/null; }
has_podcidr() { [ -n "$(node_podcidr "$1")" ]; }

# Once the controller manager has given the node its /24: the node's CNI
# config (bridge + host-local + portmap; containerd adds loopback) and routes
# to it from the other nodes and the control plane.
network_node() { # NODE
  local n=$1 cidr m
  cidr=$(node_podcidr "$n")
  cat >"$S/$n/cni/net.d/10-sipha.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "sipha-$n",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$cidr" }]], "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  for m in cp "${NODES[@]}"; do
    [ "$m" = "$n" ] || ip -n "$(ns_of "$m")" route replace "$cidr" via "${NODE_IP[$n]}"
  done
}

# --- control plane ---------------------------------------------------------------

start_apiserver() {
  start kube-apiserver $NS_CP "" "$BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --advertise-address $CP_IP --bind-address 0.0.0.0 --secure-port 6443 \
    --tls-cert-file "$S/pki/apiserver.crt" --tls-private-key-file "$S/pki/apiserver.key" \
    --client-ca-file "$S/pki/ca.crt" --token-auth-file "$S/pki/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$S/pki/sa.pub" --service-account-signing-key-file "$S/pki/sa.key" \
    --service-cluster-ip-range $SERVICE_CIDR --allow-privileged=true \
    --kubelet-client-certificate "$S/pki/kubelet-client.crt" --kubelet-client-key "$S/pki/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP --profiling=false --v=0
  wait_for "kube-apiserver /readyz" 90 kc get --raw /readyz
}

start_control_plane() {
  local C=$S/cp
  mkdir -p "$C"
  start etcd $NS_CP "" "$BIN/etcd" --name sipha --data-dir "$C/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster sipha=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
  wait_for "etcd" 30 nsenter --net=/run/netns/$NS_CP -- curl -sf http://127.0.0.1:2379/health
  start_apiserver
  start kube-controller-manager $NS_CP "" "$BIN/kube-controller-manager" --kubeconfig "$S/kubeconfigs/kcm" \
    --leader-elect=false --bind-address 127.0.0.1 --controllers '*' \
    --use-service-account-credentials=true --service-account-private-key-file "$S/pki/sa.key" \
    --root-ca-file "$S/pki/ca.crt" --allocate-node-cidrs --cluster-cidr $CLUSTER_CIDR \
    --node-cidr-mask-size 24 --service-cluster-ip-range $SERVICE_CIDR \
    --node-monitor-grace-period 20s --v=0
  start kube-scheduler $NS_CP "" "$BIN/kube-scheduler" --kubeconfig "$S/kubeconfigs/scheduler" \
    --leader-elect=false --bind-address 127.0.0.1 --v=0
  wait_for "the default ServiceAccount" 60 kc get serviceaccount default
}

dns_answers() { # from node-a's netns (as a hostNetwork pod would), through the kube-dns ClusterIP
  nsenter --net=/run/netns/sipha-node-a -- node -e "
    const r = new (require('node:dns').promises.Resolver)({ timeout: 1000, tries: 1 });
    r.setServers(['$DNS_IP']);
    r.resolve4('kubernetes.default.svc.cluster.local').then((a) => process.exit(a[0] === '$API_SVC_IP' ? 0 : 1), () => process.exit(1));"
}

# --- commands ----------------------------------------------------------------------

is_up() { [ -d "$S/pids" ] || [ -e /run/netns/$NS_CP ]; }

cmd_up() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, cgroups, mounts)"
  is_up && die "already up (state in $S, netns $NS_CP); run: hack/cluster.sh down"
  for t in containerd containerd-shim-runc-v2 runc ctr iptables nsenter unshare openssl gcc curl; do
    command -v $t >/dev/null || die "$t is missing (see docs/cluster.md for the Debian packages)"
  done
  [ -x /usr/lib/cni/bridge ] || die "CNI plugins missing in /usr/lib/cni (Debian: containernetworking-plugins)"
  command -v node >/dev/null || die "node is missing (source hack/env.sh)"
  bin_dir
  say "binaries in $BIN"
  mkdir -p "$S"
  # Our own private mount, so the namespace handles bound under it are allowed
  # (not under a shared mount) and `down` can find everything mounted here.
  mount --bind "$S" "$S"
  mount --make-private "$S"
  mkdir -p "$S/pids" "$S/logs" "$S/images"
  trap 'up_failed' EXIT
  make_pki
  make_network
  say "network namespaces: $NS_SW (br0), $NS_CP $CP_IP, sipha-node-a ${NODE_IP[node-a]}, sipha-node-b ${NODE_IP[node-b]}"
  start_control_plane
  say "control plane up (https://$CP_IP:6443)"
  build_images
  for n in "${NODES[@]}"; do make_node "$n"; done
  for n in "${NODES[@]}"; do wait_for "containerd on $n" 30 ctr --address "$S/$n/containerd.sock" version; done
  import_images "$S/images/pause.tar" "$S/images/coredns.tar"
  say "containerd running on both nodes, pause and CoreDNS images imported"
  for n in "${NODES[@]}"; do start_node_agents "$n"; done
  for n in "${NODES[@]}"; do
    wait_for "$n registered with a pod CIDR" 60 has_podcidr "$n"
    network_node "$n"
  done
  for n in "${NODES[@]}"; do wait_for "$n Ready" 90 kc wait --for=condition=Ready "node/$n" --timeout=1s; done
  say "nodes Ready: node-a $(node_podcidr node-a), node-b $(node_podcidr node-b)"
  sed -e "s#__COREDNS_IMAGE__#$COREDNS_IMAGE#" -e "s#__DNS_IP__#$DNS_IP#" "$ROOT/hack/cluster/coredns.yaml" | kc apply -f - >/dev/null
  wait_for "CoreDNS Ready" 120 kc -n kube-system wait --for=condition=Available deployment/coredns --timeout=1s
  wait_for "CoreDNS answers at $DNS_IP" 60 dns_answers
  trap - EXIT
  say "up: kubectl with: hack/cluster.sh kubectl get nodes"
}

up_failed() {
  trap - EXIT
  echo "cluster: up failed; logs in $S/logs" >&2
  if [ "${SIPHA_CLUSTER_KEEP:-0}" = 1 ]; then
    echo "cluster: SIPHA_CLUSTER_KEEP=1: left as it is; run: hack/cluster.sh down" >&2
  else
    rm -rf "$S-failed-logs" && cp -r "$S/logs" "$S-failed-logs" 2>/dev/null || true
    echo "cluster: tearing down (logs copied to $S-failed-logs)" >&2
    cmd_down
  fi
  exit 1
}

# Processes whose command line names FILE (shims of one containerd).
procs_naming() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$1" && echo "${p#/proc/}"
  done
  return 0
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "needs root"
  local n N
  stop_named kubelet-node-a kubelet-node-b kube-proxy-node-a kube-proxy-node-b
  say "kubelets and kube-proxies stopped"
  for n in "${NODES[@]}"; do
    N=$S/$n
    # Containers first, through their containerd, so shims exit cleanly.
    if pid_alive "containerd-$n" >/dev/null; then
      local c
      for c in $(ctr --address "$N/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr --address "$N/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
      done
      for c in $(ctr --address "$N/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
        timeout 5 ctr --address "$N/containerd.sock" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1 || true
      done
    fi
    stop_named "containerd-$n"
    local shims
    shims=$(procs_naming "-address $N/containerd.sock")
    # shellcheck disable=SC2086
    [ -z "$shims" ] || stop_pid $shims
    cgroup_remove "$n"
    say "$n: containers, containerd and its cgroups gone"
  done
  stop_named kube-scheduler kube-controller-manager kube-apiserver etcd
  cpu_domain_remove_cp
  say "control plane stopped"
  # Anything else we recorded (should be nothing).
  if [ -d "$S/pids" ]; then
    for f in "$S"/pids/*; do if [ -e "$f" ]; then stop_named "$(basename "$f")"; fi; done
  fi
  # Mounts under the state dir (namespace handles, and whatever else), deepest first.
  if [ -d "$S" ]; then
    local m
    for _ in 1 2 3; do
      for m in $(awk -v s="$S" '$5 == s || index($5, s "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      done
    done
  fi
  for n in "${NODES[@]}" cp switch; do
    [ ! -e "/run/netns/$(ns_of "$n")" ] || ip netns del "$(ns_of "$n")"
  done
  if [ -d "$S" ] && awk -v s="$S" '$5 == s || index($5, s "/") == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
    die "mounts left under $S; not removing it"
  fi
  rm -rf "$S"
  say "down"
}

node_arg() {
  case "${1:-}" in node-a | node-b) ;; *) die "NODE is one of: ${NODES[*]}" ;; esac
  [ -e "/run/netns/$(ns_of "$1")" ] || die "not up"
}

cmd_node_crash() { # NODE
  local n=$1 N=$S/$1 pids=() p name
  node_arg "$n"
  # The switch port goes down: the node's eth0 loses carrier, as with a pulled cable.
  ip -n $NS_SW link set "$n" down
  for name in "kubelet-$n" "kube-proxy-$n" "containerd-$n"; do
    p=$(pid_alive "$name") && pids+=("$p")
    rm -f "$S/pids/$name"
  done
  # shellcheck disable=SC2207
  pids+=($(procs_naming "-address $N/containerd.sock") $(cgroup_procs "$n"))
  [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(cgroup_procs "$n")" ] && [ -z "$(procs_naming "-address $N/containerd.sock")" ] && break
    sleep 0.1
  done
  say "$n crashed: link down, ${#pids[@]} processes killed"
}

cmd_node_boot() { # NODE
  local n=$1 N=$S/$1
  node_arg "$n"
  bin_dir
  pid_alive "kubelet-$n" >/dev/null && die "$n is running; node-crash it first"
  # What a reboot loses: mounts made by the runtime (rootfs, pod netns, volumes),
  # /run and containerd's state, the pods' cgroups.
  nsenter --mount="$N/mnt" -- sh -c "awk -v a=$N/containerd/state -v b=$N/kubelet 'index(\$5, a \"/\") == 1 || index(\$5, b \"/\") == 1 { print \$5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount \"\$m\" || umount -l \"\$m\"; done"
  # (/run is a bind mount of $N/run in the node: emptied, not replaced)
  find "$N/containerd/state" "$N/run" -mindepth 1 -delete
  cgroup_remove "$n"
  cgroup_create "$n"
  ip -n $NS_SW link set "$n" up
  start "containerd-$n" "$(ns_of "$n")" "$n" /usr/bin/containerd --config "$N/containerd.toml"
  wait_for "containerd on $n" 30 ctr --address "$N/containerd.sock" version
  start_node_agents "$n"
  wait_for "$n's kubelet healthz" 60 nsenter --net="/run/netns/$(ns_of "$n")" -- curl -sf http://127.0.0.1:10248/healthz
  wait_for "$n Ready" 90 kc wait --for=condition=Ready "node/$n" --timeout=1s
  say "$n booted and Ready"
}

cmd_status() {
  is_up || {
    echo "not up"
    return 1
  }
  local f
  for f in "$S"/pids/*; do
    local name pid
    name=$(basename "$f")
    if pid=$(pid_alive "$name"); then echo "$name: running (pid $pid)"; else echo "$name: NOT RUNNING"; fi
  done
  bin_dir
  kc get nodes -o wide || true
  kc get pods -A -o wide || true
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  is-up) is_up ;; # exit status only: 0 when a cluster (or what is left of one) is here
  kubeconfig) echo "$S/kubeconfig" ;;
  kubectl)
    shift
    bin_dir
    exec nsenter --net=/run/netns/$NS_CP -- "$BIN/kubectl" --kubeconfig "$S/kubeconfig" "$@"
    ;;
  helm)
    shift
    bin_dir
    exec nsenter --net=/run/netns/$NS_CP -- "$BIN/helm" --kubeconfig "$S/kubeconfig" "$@"
    ;;
  exec)
    [ $# -ge 3 ] || die "usage: hack/cluster.sh exec NODE|cp|switch CMD..."
    ns=$(ns_of "$2")
    shift 2
    exec nsenter --net=/run/netns/"$ns" -- "$@"
    ;;
  import)
    shift
    [ $# -ge 1 ] || die "usage: hack/cluster.sh import ARCHIVE..."
    import_images "$@"
    ;;
  node-crash) cmd_node_crash "${2:-}" ;;
  node-boot) cmd_node_boot "${2:-}" ;;
  apiserver-stop)
    is_up || die "not up"
    stop_named kube-apiserver
    say "kube-apiserver stopped"
    ;;
  apiserver-start)
    is_up || die "not up"
    bin_dir
    pid_alive kube-apiserver >/dev/null && die "kube-apiserver is running"
    start_apiserver
    say "kube-apiserver started"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
