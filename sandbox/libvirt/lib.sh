# shellcheck shell=bash
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

# stop_pid PID [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid=$1 timeout=${2:-10} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "pid $pid did not stop after ${timeout}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
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
