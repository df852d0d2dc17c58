"""Plain openstacksdk helpers of the every-state evacuation test (never the collection's code).

  every_state.py --cloud C truth PREFIX           -> JSON {name: id, host, status, vm_state, power_state, task_state,
                                                      locked}
  every_state.py --cloud C migrate-to NAME HOST   -> cold-migrates NAME to HOST and waits for VERIFY_RESIZE
  every_state.py --cloud C aggregate NAME HOST    -> creates aggregate NAME holding HOST (idempotent)
  every_state.py --cloud C aggregate-hosts NAME   -> JSON list of its hosts
  every_state.py --cloud C aggregate-delete NAME  -> removes its hosts and deletes it (no error when absent)
  every_state.py --cloud C kill-compute PIDFILE   -> SIGTERM to the nova-compute whose pid file is given, waits for it
"""

import argparse
import json
import os
import signal
import sys
import time

import openstack


def truth(conn, prefix):
    out = {}
    for server in conn.compute.servers(all_projects=True):
        if not server.name.startswith(prefix):
            continue
        out[server.name] = {'id': server.id, 'host': server.compute_host, 'status': server.status,
                            'vm_state': server.vm_state, 'power_state': server.power_state,
                            'task_state': server.task_state, 'locked': bool(server.is_locked)}
    return out


def migrate_to(conn, name, host):
    server = conn.compute.find_server(name, ignore_missing=False)
    conn.compute.post('/servers/%s/action' % server.id, json={'migrate': {'host': host}},
                      microversion='2.56').raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        server = conn.compute.get_server(server.id)
        if server.status == 'VERIFY_RESIZE' and server.task_state is None:
            return {'host': server.compute_host, 'status': server.status}
        if server.status == 'ERROR':
            sys.exit('migration failed: %s' % server.fault)
        time.sleep(0.5)
    sys.exit('timed out waiting for VERIFY_RESIZE: %s %s' % (server.status, server.task_state))


def find_aggregate(conn, name):
    return next((a for a in conn.compute.aggregates() if a.name == name), None)


def aggregate(conn, name, host):
    found = find_aggregate(conn, name) or conn.compute.create_aggregate(name=name)
    if host not in (found.hosts or []):
        conn.compute.add_host_to_aggregate(found, host)
    return {'id': found.id, 'name': name}


def aggregate_delete(conn, name):
    found = find_aggregate(conn, name)
    if found is None:
        return {'deleted': False}
    for host in found.hosts or []:
        conn.compute.remove_host_from_aggregate(found, host)
    conn.compute.delete_aggregate(found)
    return {'deleted': True}


def kill_compute(pidfile):
    with open(pidfile) as handle:
        pid = int(handle.read().split()[0])
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        command = handle.read().replace(b'\0', b' ').decode()
    if 'vmops_nova_compute.py' not in command:
        sys.exit('pid %d is not a sandbox nova-compute: %s' % (pid, command))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not os.path.exists('/proc/%d' % pid) or open('/proc/%d/stat' % pid).read().split()[2] == 'Z':
            return {'killed': pid}
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return {'killed': pid, 'sigkill': True}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('truth').add_argument('prefix')
    move = sub.add_parser('migrate-to')
    move.add_argument('name')
    move.add_argument('host')
    agg = sub.add_parser('aggregate')
    agg.add_argument('name')
    agg.add_argument('host')
    sub.add_parser('aggregate-hosts').add_argument('name')
    sub.add_parser('aggregate-delete').add_argument('name')
    sub.add_parser('kill-compute').add_argument('pidfile')
    args = parser.parse_args()
    if args.command == 'kill-compute':
        print(json.dumps(kill_compute(args.pidfile)))
        return
    conn = openstack.connect(cloud=args.cloud)
    if args.command == 'truth':
        result = truth(conn, args.prefix)
    elif args.command == 'migrate-to':
        result = migrate_to(conn, args.name, args.host)
    elif args.command == 'aggregate':
        result = aggregate(conn, args.name, args.host)
    elif args.command == 'aggregate-hosts':
        found = find_aggregate(conn, args.name)
        result = sorted(found.hosts or []) if found else None
    else:
        result = aggregate_delete(conn, args.name)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
