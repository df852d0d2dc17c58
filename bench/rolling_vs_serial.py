"""Benchmark: a move-once rolling maintenance against the naive roll, on the OpenStack sandbox, in one run.

Both approaches roll the same hosts over the same servers (booted afresh for each, on the same hosts, in the
same states and server groups):

  ours    the playbook playbooks/rolling_maintenance.yml (role vmops.lifecycle.rolling_maintenance): the whole
          roll planned first (each instance moves once), batches of several hosts where the room allows, each
          host drained to its planned destinations (host_evacuate destinations)
  naive   the playbook playbooks/maintenance_window.yml (role vmops.lifecycle.maintenance_window) over the same
          hosts with serial: 1, the scheduler choosing every destination

The cloud: the sandbox's fake computes plus extra ones (sandbox/openstack/up --extra-computes, removed at the
end), kvm1 disabled while the bench runs (a real QEMU compute: fake servers cannot move there).  The roll is
every fake compute but the last, which holds the affinity group: Nova's scheduler moves no member of an
affinity group, so its host cannot be in any roll (the plan refuses it); it also takes instances.  The other
servers, spread over the rolled hosts: running, paused, stopped and suspended, two anti-affinity groups of
three members on three rolled hosts each (sharing one host).

Measured, all read apart from the collection:
  * moves per instance: Nova's migration records of each server created during the roll (os-migrations,
    plain openstacksdk), completed ones; failed ones are counted apart;
  * server-group violations: a watcher polls the servers every second (its own connection, another user)
    and counts every (group, host) pair seen breaking its group's policy, plus the end state;
  * wall time of the playbook (ansible-playbook's start to exit);
  * API calls: the requests of the playbook's user in nova-api's and placement-api's logs during the run
    (Keystone's token requests are not in them).

Usage (the sandbox must be up; hold the OpenStack integration lock while it runs):
  flock /var/tmp/vmops-os-integration.lock .venv/bin/python bench/rolling_vs_serial.py \\
      [--computes 6] [--count 36] [--max-batch 3] [--in-flight 12] [--markdown FILE] [--collections DIR]
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import openstack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUDS = '/var/tmp/vmops-sandbox/openstack/clouds.yaml'
LOGS = '/var/tmp/vmops-sandbox/openstack/log'
PREFIX = 'vmops-bench-roll-'
ROLL_CLOUD = 'vmops-admin'          # the playbooks' user
WATCH_CLOUD = 'vmops-cloud-admin'   # the watcher's and the checks' user (not counted as the playbooks' calls)
BASE_FAKES = 4
SETTLING = ('BUILD', 'MIGRATING', 'RESIZE', 'VERIFY_RESIZE', 'REBOOT')
STATUS = {'running': 'ACTIVE', 'paused': 'PAUSED', 'stopped': 'SHUTOFF', 'suspended': 'SUSPENDED'}
MOVED = ('completed', 'confirmed', 'finished', 'done')
FAILED = ('error', 'failed', 'cancelled')


def log(message):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), message))
    sys.stderr.flush()


def layout(computes, count):
    """[(name, host, group, state)]: the affinity pair on the last compute (outside the roll); two
    anti-affinity groups with one member on each rolled host; the rest spread round-robin, in a fixed
    mix of states."""
    hosts = ['fake%d' % n for n in range(1, computes + 1)]
    roll, outside = hosts[:-1], hosts[-1]
    servers = [('aff1', outside, 'aff', 'running'), ('aff2', outside, 'aff', 'stopped')]
    # Three members each, on three rolled hosts (one stopped: a cold move).  The plan keeps each group off
    # the hosts a member left live, so a group needs destinations it never was on.
    for group, hosts in (('antiA', roll[0:3]), ('antiB', roll[2:5])):
        for index, host in enumerate(hosts):
            servers.append(('%s%d' % (group, index + 1), host, group, ('running', 'stopped', 'paused')[index]))
    mix = ['running', 'running', 'paused', 'stopped', 'suspended', 'running']
    n = 0
    while len(servers) < count:
        servers.append(('vm%02d' % (n + 1), roll[n % len(roll)], None, mix[n % len(mix)]))
        n += 1
    return roll, outside, servers[:count]


def wait_settled(conn, ids, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        servers = [s for s in conn.compute.servers(all_projects=True, name='^' + PREFIX) if s.id in ids]
        failed = [s.name for s in servers if s.status == 'ERROR']
        if failed:
            raise RuntimeError('servers in ERROR: %s' % ', '.join(failed))
        if len(servers) == len(ids) and all(s.task_state is None and s.status not in SETTLING for s in servers):
            return dict((s.id, s) for s in servers)
        if time.monotonic() > deadline:
            raise RuntimeError('servers not settled after %ds' % timeout)
        time.sleep(1)


def setup(conn, servers):
    """Boot the servers on their hosts, in their groups, then drive each to its state."""
    compute = conn.compute
    image = conn.image.find_image('vmops-guest', ignore_missing=False)
    flavor = compute.find_flavor('vmops.tiny', ignore_missing=False)
    network = conn.network.find_network('private', ignore_missing=False)
    groups = {'aff': compute.create_server_group(name=PREFIX + 'aff', policy='affinity'),
              'antiA': compute.create_server_group(name=PREFIX + 'antiA', policy='anti-affinity'),
              'antiB': compute.create_server_group(name=PREFIX + 'antiB', policy='anti-affinity')}
    wanted = {}
    for name, host, group, state in servers:
        hints = {'scheduler_hints': {'group': groups[group].id}} if group else {}
        server = compute.create_server(name=PREFIX + name, image_id=image.id, flavor_id=flavor.id,
                                       networks=[{'uuid': network.id}], availability_zone='nova:%s' % host, **hints)
        wanted[server.id] = (name, host, state)
    booted = wait_settled(conn, set(wanted))
    for server_id, (name, host, state) in wanted.items():
        if booted[server_id].compute_host != host:
            raise RuntimeError('%s booted on %s, not %s' % (name, booted[server_id].compute_host, host))
        if state == 'paused':
            compute.pause_server(server_id)
        elif state == 'stopped':
            compute.stop_server(server_id)
        elif state == 'suspended':
            compute.suspend_server(server_id)
    wait_settled(conn, set(wanted))
    return wanted, dict((key, group.id) for key, group in groups.items())


def cleanup(conn):
    compute = conn.compute
    mine = list(compute.servers(all_projects=True, name='^' + PREFIX))
    for server in mine:
        compute.delete_server(server)
    for server in mine:
        compute.wait_for_delete(server, wait=300)
    for group in compute.server_groups(all_projects=True):
        if group.name.startswith(PREFIX):
            compute.delete_server_group(group)


class Watcher(threading.Thread):
    """Polls the servers every second and records every (group, host) seen breaking its policy."""

    def __init__(self, conn, members):
        super(Watcher, self).__init__(daemon=True)
        self.conn = conn
        self.members = members          # {group id: (policy, [server ids])}
        self.seen = set()
        self.polls = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                where = dict((s.id, s.compute_host) for s in self.conn.compute.servers(all_projects=True,
                                                                                        name='^' + PREFIX))
                self.polls += 1
                self.seen |= violations(self.members, where)
            except Exception as error:  # pylint: disable=broad-except
                log('watcher: %s' % error)
            self.stop.wait(1.0)


def violations(members, where):
    found = set()
    for group, (policy, ids) in members.items():
        hosts = [where.get(i) for i in ids if where.get(i)]
        if policy == 'anti-affinity':
            found |= set((group, h) for h, n in collections.Counter(hosts).items() if n > 1)
        elif policy == 'affinity' and len(set(hosts)) > 1:
            found |= set((group, h) for h in hosts)
    return found


def migrations_since(conn, ids, since):
    """Nova's migration records of the given servers created at or after `since` (UTC text)."""
    response = conn.compute.get('/os-migrations', params={'changes-since': since}, microversion='2.80')
    response.raise_for_status()
    return [m for m in response.json()['migrations'] if m['instance_uuid'] in ids and m['created_at'] >= since]


def log_sizes():
    return dict((name, os.path.getsize(os.path.join(LOGS, name))) for name in ('nova-api.log', 'placement-api.log'))


def api_calls(start_sizes, user_id):
    """Requests logged by nova-api and placement-api for `user_id` since the sizes given."""
    counts = {}
    for name, offset in start_sizes.items():
        with open(os.path.join(LOGS, name), 'rb') as handle:
            handle.seek(offset)
            text = handle.read().decode('utf-8', 'replace')
        counts[name.split('.')[0]] = sum(1 for line in text.splitlines()
                                         if ' %s ' % user_id in line and re.search(r'"(GET|POST|PUT|DELETE|PATCH) ', line))
    return counts


def playbook_command(approach, roll, args, workdir):
    report_dir = os.path.join(workdir, approach)
    os.makedirs(report_dir, exist_ok=True)
    play = os.path.join(args.collections, 'ansible_collections', 'vmops', 'lifecycle', 'playbooks')
    common = ['-c', 'local', '-e', 'ansible_python_interpreter=%s' % sys.executable,
              '-e', 'vmops_report_dir=%s' % report_dir, '-e', 'vmops_hosts=all']
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    if approach == 'ours':
        extra = {'rolling_maintenance_cloud': ROLL_CLOUD, 'rolling_maintenance_name': 'bench',
                 'rolling_maintenance_max_batch': args.max_batch,
                 'rolling_maintenance_max_moves_in_flight': args.in_flight}
        book = 'rolling_maintenance.yml'
    else:
        extra = {'maintenance_window_cloud': ROLL_CLOUD, 'maintenance_window_window': args.window, 'vmops_serial': 1}
        book = 'maintenance_window.yml'
    if args.maintenance_seconds:
        prefix = 'rolling_maintenance' if approach == 'ours' else 'maintenance_window'
        extra[prefix + '_maintenance_tasks'] = [
            {'name': 'The maintenance', 'ansible.builtin.pause': {'seconds': args.maintenance_seconds}}]
    return [playbook, os.path.join(play, book), '-i', ','.join(roll) + ','] + common + ['-e', json.dumps(extra)]


def run_approach(approach, conn, roll, servers, args, workdir, user_id):
    log('%s: booting %d servers' % (approach, len(servers)))
    cleanup(conn)
    wanted, group_ids = setup(conn, servers)
    ids = set(wanted)
    group_members = {}
    for key, group_id in group_ids.items():
        policy = 'affinity' if key == 'aff' else 'anti-affinity'
        group_members[group_id] = (policy, [i for i, (name, _h, _s) in wanted.items()
                                            if [g for n, _h2, g, _st in servers if n == name][0] == key])
    time.sleep(1.0)
    since = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())
    time.sleep(1.0)
    watcher = Watcher(openstack.connect(cloud=WATCH_CLOUD), group_members)
    watcher.start()
    sizes = log_sizes()
    command = playbook_command(approach, roll, args, workdir)
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=CLOUDS, ANSIBLE_COLLECTIONS_PATH=args.collections,
               ANSIBLE_NOCOLOR='1', ANSIBLE_HOST_KEY_CHECKING='False')
    log('%s: %s' % (approach, ' '.join(command[:2])))
    started = time.monotonic()
    with open(os.path.join(workdir, approach + '.log'), 'w') as output:
        rc = subprocess.call(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    watcher.stop.set()
    watcher.join()
    calls = api_calls(sizes, user_id)
    records = migrations_since(conn, ids, since)
    moved = collections.Counter(m['instance_uuid'] for m in records if m['status'] in MOVED)
    failed = [m for m in records if m['status'] in FAILED]
    end = dict((s.id, s) for s in conn.compute.servers(all_projects=True, name='^' + PREFIX))
    end_where = dict((i, s.compute_host) for i, s in end.items())
    end_violations = violations(group_members, end_where)
    states_kept = sum(1 for i, (_n, _h, state) in wanted.items() if i in end and end[i].status == STATUS[state])
    on_roll = [i for i in ids if wanted[i][1] in roll]
    services = dict((s.host, s.status) for s in conn.compute.services(binary='nova-compute'))
    result = {
        'approach': approach, 'rc': rc, 'wall_s': round(wall, 1), 'servers': len(ids), 'moving': len(on_roll),
        'moves': sum(moved.values()), 'moves_per_moving_instance': round(sum(moved[i] for i in on_roll) / len(on_roll), 2),
        'moved_more_than_once': sum(1 for i in on_roll if moved[i] > 1), 'not_moved': sum(1 for i in on_roll if not moved[i]),
        'max_moves': max([moved[i] for i in on_roll] or [0]), 'failed_records': len(failed),
        'violations_seen': len(watcher.seen | end_violations), 'violations_at_end': len(end_violations),
        'watcher_polls': watcher.polls, 'states_kept': states_kept,
        'roll_enabled_at_end': all(services.get(h) == 'enabled' for h in roll),
        'api_calls': calls, 'api_calls_total': sum(calls.values()),
        'left_on_rolled_hosts': sum(1 for i in on_roll if end_where.get(i) == wanted[i][1]),
    }
    log('%s: %s' % (approach, json.dumps(result)))
    cleanup(conn)
    for host in roll:            # a failed roll may leave a host disabled: the cloud must be as before
        for service in conn.compute.services(binary='nova-compute', host=host):
            if service.status != 'enabled':
                conn.compute.enable_service(service, host, 'nova-compute')
    return result


def markdown(results, args, computes):
    rows = ['| | %s |' % ' | '.join(r['approach'] for r in results), '|---|%s' % ('---|' * len(results))]
    fields = [('playbook exit code', 'rc'), ('wall time (s)', 'wall_s'), ('servers (moving: on rolled hosts)', None),
              ('moves (completed migration records)', 'moves'), ('moves per moving instance', 'moves_per_moving_instance'),
              ('instances moved more than once', 'moved_more_than_once'), ('most moves of one instance', 'max_moves'),
              ('instances left on a rolled host', 'left_on_rolled_hosts'), ('failed migration records', 'failed_records'),
              ('server-group violations seen (polled 1/s, and at the end)', 'violations_seen'),
              ('states kept', 'states_kept'), ('rolled hosts enabled at the end', 'roll_enabled_at_end'),
              ('API calls of the playbook (nova + placement)', 'api_calls_total')]
    for label, key in fields:
        if key is None:
            cells = ['%d (%d)' % (r['servers'], r['moving']) for r in results]
        else:
            cells = [str(r[key]) for r in results]
        rows.append('| %s | %s |' % (label, ' | '.join(cells)))
    if len(results) == 2 and results[1]['wall_s']:
        rows.append('| wall, ours / naive | %.2f |' % (results[0]['wall_s'] / results[1]['wall_s']))
    head = ('%d fake computes, %d servers, roll of %d hosts; ours: max_batch %d, max_moves_in_flight %d; naive: '
            'serial 1, window %d; maintenance %d s per host\n\n' % (computes, args.count, computes - 1, args.max_batch,
                                                                  args.in_flight, args.window, args.maintenance_seconds))
    return head + '\n'.join(rows) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--computes', type=int, default=6, help='fake computes (extra ones started past fake4)')
    parser.add_argument('--count', type=int, default=36)
    parser.add_argument('--max-batch', type=int, default=3)
    parser.add_argument('--in-flight', type=int, default=12)
    parser.add_argument('--window', type=int, default=4, help='naive: moves in flight per host')
    parser.add_argument('--maintenance-seconds', type=int, default=0)
    parser.add_argument('--only', choices=['ours', 'naive'])
    parser.add_argument('--markdown')
    parser.add_argument('--keep-extra', action='store_true', help='do not remove the extra computes at the end')
    parser.add_argument('--collections', default=os.path.join(REPO, '.build', 'collections'))
    args = parser.parse_args()
    os.environ['OS_CLIENT_CONFIG_FILE'] = CLOUDS
    up = os.path.join(REPO, 'sandbox', 'openstack', 'up')
    extra = args.computes - BASE_FAKES
    conn = openstack.connect(cloud=WATCH_CLOUD)
    user_id = openstack.connect(cloud=ROLL_CLOUD).current_user_id
    kvm_disabled = False
    results = []
    workdir = tempfile.mkdtemp(prefix='vmops-bench-roll.')
    try:
        if extra > 0:
            started = time.monotonic()
            subprocess.check_call([up, '--extra-computes', str(extra)], stdout=subprocess.DEVNULL)
            log('extra computes up in %.1f s' % (time.monotonic() - started))
        for service in conn.compute.services(binary='nova-compute', host='kvm1'):
            if service.status == 'enabled':
                conn.compute.disable_service(service, 'kvm1', 'nova-compute', 'vmops bench rolling_vs_serial')
                kvm_disabled = True
        roll, _outside, servers = layout(args.computes, args.count)
        for approach in ('ours', 'naive'):
            if args.only and approach != args.only:
                continue
            results.append(run_approach(approach, conn, roll, servers, args, workdir, user_id))
    finally:
        cleanup(conn)
        if kvm_disabled:
            for service in conn.compute.services(binary='nova-compute', host='kvm1'):
                conn.compute.enable_service(service, 'kvm1', 'nova-compute')
        if extra > 0 and not args.keep_extra:
            started = time.monotonic()
            subprocess.check_call([up, '--remove-extra-computes'], stdout=subprocess.DEVNULL)
            log('extra computes removed in %.1f s' % (time.monotonic() - started))
    text = markdown(results, args, args.computes)
    print(text)
    print(json.dumps(results, indent=1))
    log('playbook logs and reports: %s' % workdir)
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(text)


if __name__ == '__main__':
    main()
