# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts sourcing this
# Shared settings and helpers of the libvirt sandbox scripts (sourced by up, down, build-guest).

VMOPS_SANDBOX_DIR=${VMOPS_SANDBOX_DIR:-/var/tmp/vmops-sandbox}
# Per-host daemon state (config, run, lib, log, cache dirs of every host): deleted by `down --wipe`.
VMOPS_STATE_DIR=$VMOPS_SANDBOX_DIR/libvirt
# Survives `down --wipe`: guest kernel/initramfs and a seed copy of QEMU's capabilities cache.
VMOPS_CACHE_DIR=$VMOPS_SANDBOX_DIR/cache
# Network: one namespace per host plus one holding the bridge that joins them.
VMOPS_NET_PREFIX=198.51.100
VMOPS_LAN_NS=vmops-lan
VMOPS_BRIDGE=vmopsbr0

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "command not found: $c (run scripts/bootstrap)"
  done
}

need_root() { ((EUID == 0)) || die "must run as root (namespaces, mounts, daemons)"; }

host_ns() { printf 'vmops-h%s' "$1"; }
host_dir() { printf '%s/h%s' "$VMOPS_STATE_DIR" "$1"; }
host_uri() { printf 'qemu+unix:///system?socket=%s/run/libvirt-sock' "$(host_dir "$1")"; }

# pid_alive PIDFILE COMM: prints the pid when PIDFILE names a live process whose command is COMM
# and whose command line mentions PIDFILE (so a recycled pid is never mistaken for our daemon).
pid_alive() {
  local pidfile=$1 comm=$2 pid cmdline
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$comm" ]] || return 1
  cmdline=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  grep -qxF -- "$pidfile" <<<"$cmdline" || return 1
  printf '%s\n' "$pid"
}

# stop_pids TIMEOUT_S PID...: SIGTERM to all, wait for all, then SIGKILL the ones left.
stop_pids() {
  local timeout=$1 pid i left
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    left=()
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "pid(s) ${left[*]} did not stop after ${timeout}s: SIGKILL"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

# Hosts with a state dir, as numbers, sorted.
known_hosts() {
  local d
  for d in "$VMOPS_STATE_DIR"/h*/; do
    d=${d%/}
    d=${d##*/h}
    [[ $d =~ ^[0-9]+$ ]] && printf '%s\n' "$d"
  done | sort -n
}

# Paths end up in URIs, configs and single-quoted env files: keep them plain.
[[ $VMOPS_SANDBOX_DIR =~ ^/[A-Za-z0-9._/+-]+$ ]] \
  || die "VMOPS_SANDBOX_DIR must be an absolute path of letters, digits and ._/+- ($VMOPS_SANDBOX_DIR)"

# take_lock: serialises up/down runs (fd 9; the daemons are started with it closed).
take_lock() {
  mkdir -p "$VMOPS_SANDBOX_DIR"
  exec 9>"$VMOPS_SANDBOX_DIR/.lock"
  flock -w 300 9 || die "another up/down holds $VMOPS_SANDBOX_DIR/.lock"
}
