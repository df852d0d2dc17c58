# shellcheck shell=bash disable=SC2034  # variables are used by the scripts sourcing this
# Shared settings and helpers of sandbox/openstack/{install,up,down}.

VMOPS_SANDBOX_DIR=${VMOPS_SANDBOX_DIR:-/var/tmp/vmops-sandbox}
OS_STATE=$VMOPS_SANDBOX_DIR/openstack
OS_RUN=$OS_STATE/run
OS_LOG=$OS_STATE/log
OS_ETC=$OS_STATE/etc

log() { printf '%s: %s\n' "openstack/$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { ((EUID == 0)) || die "must run as root"; }

[[ $VMOPS_SANDBOX_DIR =~ ^/[A-Za-z0-9._/+-]+$ ]] \
  || die "VMOPS_SANDBOX_DIR must be an absolute path of letters, digits and ._/+- ($VMOPS_SANDBOX_DIR)"

# proc_start PID: the process's start time (clock ticks since boot, field 22 of /proc/PID/stat).
proc_start() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a fields <<<"${stat##*) }"
  printf '%s\n' "${fields[19]}"
}

# record_pid NAME PID: writes "PID STARTTIME" to $OS_RUN/NAME.pid.
record_pid() {
  local start
  start=$(proc_start "$2") || start=gone
  printf '%s %s\n' "$2" "$start" > "$OS_RUN/$1.pid"
}

# pid_of NAME: prints the pid recorded in $OS_RUN/NAME.pid when that process is alive and still
# the one we started (same start time: a recycled pid never matches; the environment or command
# line cannot be used, services rewrite them with setproctitle).
pid_of() {
  local f=$OS_RUN/$1.pid pid start
  [[ -s $f ]] || return 1
  read -r pid start < "$f" || true
  [[ $pid =~ ^[0-9]+$ && -n $start ]] || return 1
  [[ $(proc_start "$pid") == "$start" ]] || return 1
  grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
  printf '%s\n' "$pid"
}

# group_alive PGID: some process of the group is alive (zombies, not yet reaped by init here,
# do not count).
group_alive() {
  local p
  for p in $(pgrep -g "$1" 2>/dev/null) "$1"; do
    if [[ -r /proc/$p/status ]] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then return 0; fi
  done
  return 1
}

# stop_pids TIMEOUT_S PID...: SIGTERM to all, wait, SIGKILL what is left.
stop_pids() {
  local timeout=$1 pid i left
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    left=()
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
        left+=("$pid")
      fi
    done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "pid(s) ${left[*]} did not stop after ${timeout}s: SIGKILL"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

# take_lock: serialises up/down (fd 8; daemons are started with it closed).
take_lock() {
  mkdir -p "$OS_STATE"
  exec 8>"$OS_STATE/.lock"
  flock -w 600 8 || die "another up/down holds $OS_STATE/.lock"
}
