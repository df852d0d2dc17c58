#!/usr/bin/env bash
# Shared by scripts/test and scripts/demo: paths, and the collection laid out where Ansible wants it.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VMOPS_VENV:-$repo/.venv}
build=$repo/.build
export PATH=$venv/bin:$PATH
export ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python
export ANSIBLE_COLLECTIONS_PATH=$build/collections
export ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-$([[ -t 1 ]] || echo 1)}

# ansible-playbook follows a symlink to the working tree (edits show at once).
link_collection() {
  mkdir -p "$build/collections/ansible_collections/vmops"
  ln -sfn "$repo" "$build/collections/ansible_collections/vmops/lifecycle"
}

# ansible-test needs a real ansible_collections/vmops/lifecycle directory: copy what ships
# (galaxy.yml's build_ignore: sandbox, scripts, bench, .ci are dev tooling and checked apart).
# It must live outside this git checkout: inside it, ansible-test asks git for the file list and
# finds the (ignored) copy empty.
copy_collection() {
  local dest=${VMOPS_TEST_TREE:-/var/tmp/vmops-ansible-test}/ansible_collections/vmops/lifecycle
  mkdir -p "$dest"
  rsync -a --delete --delete-excluded --exclude .git --exclude '.venv*' --exclude .build \
    --exclude .pytest_cache --exclude __pycache__ --exclude .ansible --exclude /sandbox --exclude /scripts --exclude /bench \
    --exclude /.ci --exclude /tests/output "$repo/" "$dest/"
  echo "$dest"
}

sandbox_up() {
  "$repo/sandbox/libvirt/up" >&2
  set -a
  # shellcheck disable=SC1091
  . "${VMOPS_SANDBOX_DIR:-/var/tmp/vmops-sandbox}/libvirt/hosts.env"
  set +a
}

# True if the libvirt sandbox's first host is up (then this run did not start it).
sandbox_running() {
  local pid_file=${VMOPS_SANDBOX_DIR:-/var/tmp/vmops-sandbox}/libvirt/h1/libvirtd.pid
  [[ -s $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

VMOPS_CLOUDS_YAML=${VMOPS_SANDBOX_DIR:-/var/tmp/vmops-sandbox}/openstack/clouds.yaml
export VMOPS_CLOUDS_YAML

# True if the OpenStack sandbox's keystone answers (then this run did not start it).
cloud_running() {
  [[ -s $VMOPS_CLOUDS_YAML ]] && python - "$VMOPS_CLOUDS_YAML" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen('http://127.0.0.1:5000/v3', timeout=3)
PY
}

step() { printf '\n=== %s ===\n' "$*"; }
