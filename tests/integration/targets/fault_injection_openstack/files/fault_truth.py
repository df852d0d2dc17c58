"""What Nova says, read with plain openstacksdk (never through the collection, never through the fault proxy),
and the test's own set-up: the proxied clouds.yaml, servers, locks, the background playbook it kills.

Every command that reads Nova takes --cloud C [--config CLOUDS_YAML].

  fault_truth.py clouds-yaml SRC DEST NAME --copy CLOUD --compute URL --placement URL
  fault_truth.py --cloud C boot JSON                            boot [{name, host, state, slow}], wait, drive states
  fault_truth.py --cloud C truth PREFIX [--host H]...           servers (state, host, lock, reason) and services
  fault_truth.py --cloud C lock NAME REASON                     lock with a reason (admin of any project)
  fault_truth.py --cloud C wait-moving PREFIX HOST [--lock-prefix P] [--timeout S]
  fault_truth.py --cloud C actions PREFIX                       Nova's instance actions per server, oldest first
  fault_truth.py --cloud C migrations PREFIX HOST              the migration records off HOST, per server
  fault_truth.py --cloud C wait-quiet PREFIX HOST [--timeout S]  until no task and no move in progress
  fault_truth.py --cloud C service-set HOST enabled|disabled
  fault_truth.py --cloud C cleanup PREFIX                       unlock and delete every server of the prefix
  fault_truth.py spawn LOG -- ARGV...                           start ARGV in a new session, print its pid
  fault_truth.py kill-tree PID                                  SIGKILL that process and all its descendants
"""

import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import openstack
import yaml

STATES = {'ACTIVE': 'running', 'SHUTOFF': 'stopped', 'PAUSED': 'paused', 'SUSPENDED': 'suspended',
          'SHELVED': 'shelved', 'SHELVED_OFFLOADED': 'shelved_offloaded', 'RESCUE': 'rescued',
          'VERIFY_RESIZE': 'resize_pending', 'ERROR': 'error'}
IN_PROGRESS = ('queued', 'preparing', 'running', 'accepted', 'pre-migrating', 'migrating', 'post-migrating',
               'finished', 'confirming')
STEPS = {'stopped': 'stop_server', 'paused': 'pause_server', 'suspended': 'suspend_server'}


def servers(conn, prefix):
    return list(conn.compute.servers(all_projects=True, name='^%s' % re.escape(prefix)))


def report(server):
    return {'id': server.id, 'status': server.status, 'state': STATES.get(server.status, 'other:%s' % server.status),
            'task_state': server.task_state, 'host': server.compute_host, 'locked': bool(server.is_locked),
            'locked_reason': server.locked_reason}


def service(conn, host):
    found = [s for s in conn.compute.services(binary='nova-compute') if s.host == host]
    if not found:
        return {'exists': False}
    return {'exists': True, 'id': found[0].id, 'status': found[0].status, 'state': found[0].state,
            'disabled_reason': found[0].disabled_reason, 'forced_down': bool(found[0].is_forced_down)}


def migrations(conn, ids, host):
    records = conn.compute.get('/os-migrations', params={'source_compute': host},
                               microversion='2.80').json()['migrations']
    return [r for r in records if r['instance_uuid'] in ids]


def wait_settled(conn, ids, timeout, wanted=None):
    deadline = time.monotonic() + timeout
    while True:
        found = dict((s.id, s) for s in conn.compute.servers(all_projects=True) if s.id in ids)
        pending = [i for i in ids if i not in found or found[i].task_state or found[i].status == 'BUILD'
                   or (wanted and found[i].status != wanted)]
        errors = [found[i] for i in ids if i in found and found[i].status == 'ERROR']
        if errors:
            return found, errors
        if not pending:
            return found, []
        if time.monotonic() > deadline:
            sys.exit('timed out waiting for %s' % ', '.join(sorted(ids[i] for i in pending)))
        time.sleep(1)


def boot(conn, specs):
    """specs: [{name, host, state (running), slow (seconds of a live move)}]."""
    image = conn.image.find_image('vmops-guest', ignore_missing=False)
    flavor = conn.compute.find_flavor('vmops.tiny', ignore_missing=False)
    network = conn.network.find_network('private', ignore_missing=False)
    wanted = dict((spec['name'], dict(host=spec['host'], state=spec.get('state', 'running'), slow=spec.get('slow')))
                  for spec in specs)
    ids = {}
    for attempt in range(5):
        existing = dict((s.name, s) for s in servers(conn, os.path.commonprefix(list(wanted))))
        for name, spec in wanted.items():
            if name in ids.values():
                continue
            server = existing.get(name) or conn.compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks=[{'uuid': network.id}],
                availability_zone='nova:%s' % spec['host'],
                metadata={'vmops_fake_live_migration_seconds': str(spec['slow'])} if spec['slow'] else {})
            ids[server.id] = name
        _found, errors = wait_settled(conn, ids, 600, wanted='ACTIVE')
        if not errors:
            break
        # A host another test disabled for a moment (NoValidHost): boot that one again.
        for server in errors:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=300)
            del ids[server.id]
        time.sleep(3)
    else:
        sys.exit('could not boot: %s' % ', '.join(sorted(set(wanted) - set(ids.values()))))
    by_name = dict((name, server_id) for server_id, name in ids.items())
    for name, spec in wanted.items():
        if spec['state'] != 'running':
            getattr(conn.compute, STEPS[spec['state']])(by_name[name])
    found, errors = wait_settled(conn, ids, 300)
    if errors:
        sys.exit('servers in ERROR after their set-up: %s' % ', '.join(s.name for s in errors))
    return dict((ids[i], report(found[i])) for i in ids)


def wait_moving(conn, prefix, host, lock_prefix, timeout):
    """Until a server of the prefix has a move in progress off the host (with lock_prefix: a server so locked)."""
    started = time.monotonic()
    ids = dict((s.id, s.name) for s in servers(conn, prefix))
    while True:
        moving = [ids[r['instance_uuid']] for r in migrations(conn, ids, host) if r['status'] in IN_PROGRESS]
        locked = [s.name for s in servers(conn, prefix)
                  if lock_prefix and s.is_locked and (s.locked_reason or '').startswith(lock_prefix)]
        if moving and (not lock_prefix or set(locked) & set(moving)):
            return {'seen': True, 'moving': sorted(set(moving)), 'locked': sorted(locked),
                    'seconds': round(time.monotonic() - started, 1)}
        if time.monotonic() - started > timeout:
            return {'seen': False, 'moving': sorted(set(moving)), 'locked': sorted(locked),
                    'seconds': round(time.monotonic() - started, 1)}
        time.sleep(0.3)


def wait_quiet(conn, prefix, host, timeout):
    """Until no server of the prefix has a task or a move in progress off the host."""
    started = time.monotonic()
    while True:
        found = servers(conn, prefix)
        ids = dict((s.id, s.name) for s in found)
        busy = sorted(set([s.name for s in found if s.task_state] +
                          [ids[r['instance_uuid']] for r in migrations(conn, ids, host) if r['status'] in IN_PROGRESS]))
        if not busy or time.monotonic() - started > timeout:
            return {'quiet': not busy, 'busy': busy, 'seconds': round(time.monotonic() - started, 1)}
        time.sleep(0.5)


def clouds_yaml(args):
    with open(args.src) as handle:
        config = yaml.safe_load(handle)
    cloud = copy.deepcopy(config['clouds'][args.copy])
    cloud['compute_endpoint_override'] = args.compute
    cloud['placement_endpoint_override'] = args.placement
    config['clouds'][args.name] = cloud
    fd = os.open(args.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        yaml.safe_dump(config, handle, default_flow_style=False)
    return {'written': args.dest, 'cloud': args.name, 'compute': args.compute, 'placement': args.placement}


def children():
    """pid -> parent pid of every live (not zombie) process."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as handle:
                    fields = handle.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if fields[0] != 'Z':
                parents[int(entry)] = int(fields[1])
    return parents


def tree(root):
    """root and every process descending from it (ansible's workers start sessions of their own, so the
    process group is not enough: the module runs in the worker's session)."""
    parents = children()
    found, grew = {root} if root in parents else set(), True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def kill_tree(pid):
    """SIGKILL an ansible-playbook this script spawned and everything it started (workers, modules)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            command = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return {'killed': False, 'reason': 'pid %d is gone' % pid}
    if 'ansible-playbook' not in command or os.getsid(pid) != pid:
        sys.exit('pid %d is not a spawned ansible-playbook session leader: %s' % (pid, command))
    # Freeze the tree first (nothing forks or reaps in between), then kill every member at once.
    frozen = set()
    while True:
        members = tree(pid) - frozen
        if not members:
            break
        for member in members:
            try:
                os.kill(member, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        frozen |= members
    commands = {}
    for member in frozen:
        try:
            with open('/proc/%d/cmdline' % member, 'rb') as handle:
                commands[member] = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')[:400]
        except OSError:
            pass
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(member in children() for member in frozen) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {'killed': True, 'pid': pid, 'processes': commands,
            'left': sorted(member for member in frozen if member in children())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud')
    parser.add_argument('--config', help='the clouds.yaml to read (else OS_CLIENT_CONFIG_FILE)')
    sub = parser.add_subparsers(dest='command', required=True)
    clouds = sub.add_parser('clouds-yaml')
    for name in ('src', 'dest', 'name'):
        clouds.add_argument(name)
    for name in ('--copy', '--compute', '--placement'):
        clouds.add_argument(name, required=True)
    sub.add_parser('boot').add_argument('specs', type=json.loads, help='JSON list of {name, host, state, slow}')
    truth = sub.add_parser('truth')
    truth.add_argument('prefix')
    truth.add_argument('--host', action='append', default=[])
    lock = sub.add_parser('lock')
    lock.add_argument('name')
    lock.add_argument('reason')
    moving = sub.add_parser('wait-moving')
    moving.add_argument('prefix')
    moving.add_argument('host')
    moving.add_argument('--lock-prefix')
    moving.add_argument('--timeout', type=float, default=90)
    sub.add_parser('actions').add_argument('prefix')
    moves = sub.add_parser('migrations')
    moves.add_argument('prefix')
    moves.add_argument('host')
    quiet = sub.add_parser('wait-quiet')
    quiet.add_argument('prefix')
    quiet.add_argument('host')
    quiet.add_argument('--timeout', type=float, default=120)
    service_set = sub.add_parser('service-set')
    service_set.add_argument('host')
    service_set.add_argument('status', choices=['enabled', 'disabled'])
    sub.add_parser('cleanup').add_argument('prefix')
    spawn = sub.add_parser('spawn')
    spawn.add_argument('log')
    spawn.add_argument('argv', nargs=argparse.REMAINDER)
    sub.add_parser('kill-tree').add_argument('pid', type=int)
    args = parser.parse_args()

    if args.command == 'clouds-yaml':
        print(json.dumps(clouds_yaml(args)))
        return
    if args.command == 'spawn':
        argv = args.argv[1:] if args.argv[:1] == ['--'] else args.argv
        with open(args.log, 'ab') as log:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(json.dumps({'pid': child.pid}))
        return
    if args.command == 'kill-tree':
        print(json.dumps(kill_tree(args.pid)))
        return
    if args.config:
        os.environ['OS_CLIENT_CONFIG_FILE'] = args.config
    conn = openstack.connect(cloud=args.cloud)
    compute = conn.compute
    if args.command == 'boot':
        out = boot(conn, args.specs)
    elif args.command == 'truth':
        out = {'servers': dict((s.name, report(s)) for s in servers(conn, args.prefix)),
               'services': dict((host, service(conn, host)) for host in args.host)}
    elif args.command == 'lock':
        server = servers(conn, args.name)[0]
        compute.post('/servers/%s/action' % server.id, json={'lock': {'locked_reason': args.reason}},
                     microversion='2.73')
        out = report(compute.get_server(server.id))
    elif args.command == 'wait-moving':
        out = wait_moving(conn, args.prefix, args.host, args.lock_prefix, args.timeout)
    elif args.command == 'actions':
        # Nova's own record of what was done to each server (instance actions), oldest first.
        out = {}
        for server in servers(conn, args.prefix):
            records = compute.get('/servers/%s/os-instance-actions' % server.id,
                                  microversion='2.58').json()['instanceActions']
            out[server.name] = [r['action'] for r in sorted(records, key=lambda r: r['start_time'])]
    elif args.command == 'migrations':
        ids = dict((s.id, s.name) for s in servers(conn, args.prefix))
        out = {}
        for record in sorted(migrations(conn, ids, args.host), key=lambda r: r['id']):
            out.setdefault(ids[record['instance_uuid']], []).append(
                {'id': record['id'], 'type': record['migration_type'], 'status': record['status'],
                 'dest': record['dest_compute']})
    elif args.command == 'wait-quiet':
        out = wait_quiet(conn, args.prefix, args.host, args.timeout)
    elif args.command == 'service-set':
        found = service(conn, args.host)
        compute.put('/os-services/%s' % found['id'], json={'status': args.status}, microversion='2.53')
        out = service(conn, args.host)
    elif args.command == 'cleanup':
        gone = []
        for server in servers(conn, args.prefix):
            if server.is_locked:
                compute.unlock_server(server)
            compute.delete_server(server)
            gone.append(server)
        for server in gone:
            compute.wait_for_delete(server, wait=300)
        out = {'deleted': sorted(s.name for s in gone)}
    conn.close()
    print(json.dumps(out, sort_keys=True))


if __name__ == '__main__':
    main()
