"""Fault-injection suite: each fault against a real drain or evacuation on the OpenStack sandbox.

Every fault gets 10 fresh servers on fake1 in mixed states (4 running, one of them locked, 2 paused,
2 stopped, 2 suspended; live moves slowed to --copy-seconds in the fake driver, so a drain lasts long
enough to be hit), and runs vmops.lifecycle.host_evacuate as a user does: ansible-playbook with the
collection under .build/collections (ANSIBLE_COLLECTIONS_PATH, as `scripts/lib.sh link_collection`
makes it), in a session of its own.  The fault is injected once a move is seen in progress (plain
openstacksdk reads of the migrations API), then the run is left to end by itself.  Where the
documented recovery is a rerun (or, for a dead source host, an evacuation), the suite does it after the
fault is over.

The end state is read independently, with plain openstacksdk and the fake driver's own guest files
(nova/<host>/instances/vmops-fake-instances.json, read every 0.5 s during the runs): every server
still exists, none in ERROR or with a task/migration left, each in the power state it started in and
off the source when the job is done, the source's service as host_evacuate.md promises (a completed
drain leaves it disabled, a failed one enables it again, an evacuation leaves it forced down), every
server accounted for by the reports (the first run's names them all; a rerun's, all that was left to
do), and no guest running on two live computes for longer than a live migration's hand-over (5 s).
A fault is survived only when every check holds.

After each fault the sandbox is given back: what was killed is started again (sandbox/openstack/up
--restart NAME), the source host's compute restarted and un-forced after an evacuation, the servers
deleted, every compute enabled and up.  Each fault holds the sandbox's integration lock
(/var/tmp/vmops-os-integration.lock) for its own duration only.  Services are killed only through
their pid files under /var/tmp/vmops-sandbox/openstack/run.

Usage (the sandbox up; collection linked: . scripts/lib.sh && link_collection):
  OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \\
  .venv/bin/python bench/fault_suite.py [--only NAME]... [--markdown docs/reliability.md] [--list]
"""

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration', 'targets', 'fault_injection_openstack', 'files'))

import dead_host_openstack as dead_host  # noqa: E402  (give_back: restart, un-force, enable)
import drain_openstack as common  # noqa: E402  (connection, server set-up, deletion)
import fault_truth  # noqa: E402  (kill_tree: SIGKILL a spawned ansible-playbook and all it started)

PREFIX = 'vmops-faults-'
# 10 servers: state, locked
MIX = [('running', False)] * 3 + [('running', True)] + [('paused', False)] * 2 + \
      [('stopped', False)] * 2 + [('suspended', False)] * 2
# The drain helpers name, list and delete servers by these (read at call time).
common.PREFIX = dead_host.PREFIX = PREFIX
common.MIX = MIX

SANDBOX = os.environ.get('VMOPS_SANDBOX_DIR', '/var/tmp/vmops-sandbox') + '/openstack'
UP = os.path.join(REPO, 'sandbox', 'openstack', 'up')
FAULT_PROXY = os.path.join(REPO, 'sandbox', 'openstack', 'faultproxy.py')
PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
ANSIBLE_PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')
OS_LOCK = '/var/tmp/vmops-os-integration.lock'
SOURCE = 'fake1'
FAKE_HOSTS = ('fake1', 'fake2', 'fake3', 'fake4')
IN_PROGRESS = fault_truth.IN_PROGRESS + ('accepted', 'pre-migrating', 'done')
CLOUD = 'vmops-admin'

PLAYBOOK = """\
- name: One host_evacuate run of the fault suite
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Drain or evacuate the host
      vmops.lifecycle.host_evacuate:
        cloud: "{{ fault_cloud }}"
        host: "{{ fault_host }}"
        mode: "{{ fault_mode }}"
        fenced: "{{ fault_fenced | default(omit) }}"
        force_down: "{{ fault_force_down | default(omit) }}"
        error_policy: "{{ fault_error_policy | default(omit) }}"
        window: "{{ fault_window | default(omit) }}"
        deadline: "{{ fault_deadline | default(omit) }}"
        timeout: "{{ fault_timeout }}"
        disabled_reason: vmops fault suite
      register: fault_result
      ignore_errors: true

    - name: Keep the result for the suite
      ansible.builtin.copy:
        content: "{{ fault_result | to_json }}"
        dest: "{{ fault_result_file }}"
        mode: "0600"
"""

# An evacuation as the disaster_recovery role runs it: fenced, forced down, servers in error rebuilt too.
EVACUATE = dict(mode='evacuate', fenced=True, force_down=True, error_policy='move')
FAULTS = []


def fault(title, backend='openstack'):
    def register(function):
        FAULTS.append({'name': function.__name__, 'title': title, 'backend': backend, 'run': function})
        return function
    return register


# Sandbox services, by their pid files ----------------------------------------------------------------------

def service_pid(name):
    """The pid in run/NAME.pid when it names the live process that was started (pid and start time)."""
    try:
        with open(os.path.join(SANDBOX, 'run', '%s.pid' % name)) as handle:
            pid, start = handle.read().split()[:2]
        with open('/proc/%s/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (OSError, ValueError):
        return None
    return int(pid) if fields[19] == start and fields[0] != 'Z' else None


def kill_service(name):
    """SIGKILL a sandbox service's process group (it runs in a session of its own): a crash, not a stop."""
    pid = service_pid(name)
    if pid is None:
        raise RuntimeError('%s is not running (run/%s.pid)' % (name, name))
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while service_pid(name) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


def restart_service(name):
    started = time.monotonic()
    with open(os.path.join(tempfile.gettempdir(), 'vmops-faults-up.log'), 'ab') as log:
        subprocess.run([UP, '--restart', name], check=True, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    return time.monotonic() - started


# The collection, as a user runs it --------------------------------------------------------------------------

class Playbook(object):
    """ansible-playbook with one host_evacuate task, in a session of its own (so it can be killed whole)."""

    def __init__(self, workdir, label, config, text=PLAYBOOK, **options):
        self.result_file = os.path.join(workdir, '%s.result.json' % label)
        self.log = os.path.join(workdir, '%s.log' % label)
        variables = dict(fault_cloud=CLOUD, fault_host=SOURCE, fault_mode='drain', fault_window=4, fault_deadline=60,
                         fault_timeout=240, fault_result_file=self.result_file, ansible_python_interpreter=PYTHON)
        variables.update(('fault_%s' % key, value) for key, value in options.items())
        vars_file = os.path.join(workdir, '%s.vars.json' % label)
        with open(vars_file, 'w') as handle:
            json.dump(variables, handle)
        playbook = os.path.join(workdir, '%s.yml' % label)
        with open(playbook, 'w') as handle:
            handle.write(text)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.build', 'collections'),
                   OS_CLIENT_CONFIG_FILE=config, ANSIBLE_NOCOLOR='1')
        self.started = time.monotonic()
        with open(self.log, 'ab') as log:
            self.process = subprocess.Popen(
                [ANSIBLE_PLAYBOOK, '-i', 'localhost,', '-c', 'local', '-e', '@' + vars_file, playbook],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.seconds = None

    def wait(self, timeout=420):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError('ansible-playbook still running after %d s: killed' % timeout)
        self.seconds = time.monotonic() - self.started
        return self.result()

    def kill(self):
        killed = fault_truth.kill_tree(self.process.pid)
        self.process.wait(30)
        self.seconds = time.monotonic() - self.started
        return killed

    def result(self):
        try:
            with open(self.result_file) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None


def summary(result, seconds):
    """What the collection did, in one line: outcomes per server, the message of a failed run."""
    if result is None:
        return 'no result (killed)'
    counts = {}
    for entry in result.get('servers') or []:
        counts[entry.get('outcome')] = counts.get(entry.get('outcome'), 0) + 1
    text = '%s in %.0f s: %s' % ('failed' if result.get('failed') else 'ok', seconds,
                                 ', '.join('%d %s' % (n, o) for o, n in sorted(counts.items())) or 'no servers')
    if result.get('failed'):
        reason = (result.get('ended_early') or {}).get('reason')
        text += '; %s%s' % ('ended early (%s): ' % reason if reason else '', (result.get('msg') or '')[:220])
    return text


# Independent truth -------------------------------------------------------------------------------------------

RUNNING = 1      # nova.compute.power_state.RUNNING, as the fake driver keeps it in its guest file
TWO_HOSTS_GRACE = 5.0


def guest_files():
    """guest id -> {host: power state} from the guest file of every fake compute whose process is alive (a
    killed compute's file is a dead host's memory, not a running guest)."""
    holders = {}
    for host in FAKE_HOSTS:
        if service_pid('nova-compute-%s' % host) is None:
            continue
        try:
            with open(os.path.join(SANDBOX, 'nova', host, 'instances', 'vmops-fake-instances.json')) as handle:
                guests = json.load(handle)
        except (OSError, ValueError):
            continue
        for guest, item in guests.items():
            holders.setdefault(guest, {})[host] = item.get('state')
    return holders


class TwoHostsWatcher(threading.Thread):
    """Reads the guest files every 0.5 s: a guest running on two live computes for longer than a live
    migration's hand-over (TWO_HOSTS_GRACE seconds) is one instance running on two hosts."""

    def __init__(self, ids):
        super(TwoHostsWatcher, self).__init__(daemon=True)
        self.ids = set(ids)
        self.since = {}
        self.seen = {}
        self.stop = threading.Event()

    @classmethod
    def started(cls, ids):
        watcher = cls(ids)
        watcher.start()
        return watcher

    def finish(self):
        self.stop.set()
        self.join(5)

    def problems(self):
        return ['running on two live computes: %s' % self.seen] if self.seen else []

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic()
            holders = guest_files()
            for guest in self.ids:
                running = sorted(h for h, state in holders.get(guest, {}).items() if state == RUNNING)
                if len(running) < 2:
                    self.since.pop(guest, None)
                    continue
                first = self.since.setdefault(guest, now)
                if now - first > TWO_HOSTS_GRACE:
                    self.seen[guest] = {'hosts': running, 'seconds': round(now - first, 1)}
            self.stop.wait(0.5)


def unaccounted(wanted, results, settled_before, key):
    """wanted: key -> name.  The first run's report must name every server (a run that ends early keeps the
    whole record); a rerun's report names what was still to do, so a server it leaves out must have been
    where the job wanted it before the rerun started (settled_before)."""
    problems = []
    if results[-1] is None:
        problems.append('no final result')
    checks = [('the first report', results[0], ())]
    if len(results) > 1:
        checks.append(('the rerun\'s report', results[-1], settled_before))
    for label, result, exempt in checks:
        if result is None:
            continue
        named = set(entry.get(key) for entry in result.get('servers') or [])
        missing = [name for item, name in sorted(wanted.items(), key=lambda kv: kv[1])
                   if item not in named and item not in exempt]
        if missing:
            problems.append('not in %s: %s' % (label, ', '.join(missing)))
    return problems


def off_source(ids):
    """Ours already on another host (plain openstacksdk), just before a rerun."""
    api = dead_host.Api(CLOUD)
    try:
        return set(b['id'] for b in api.servers() if b['id'] in ids and common.host_of(b) != SOURCE)
    finally:
        api.close()


def end_state(servers, results, service_promise, settled_before=(), moved=True):
    """Plain openstacksdk: (problems, description).  service_promise: 'disabled', 'enabled' or 'forced_down'."""
    api = dead_host.Api(CLOUD)
    try:
        bodies = dict((b['id'], b) for b in api.servers())
        service = api.service(SOURCE)
    finally:
        api.close()
    problems = []
    lost = [s['name'] for s in servers if s['id'] not in bodies]
    if lost:
        problems.append('lost: %s' % ', '.join(lost))
    hosts = {}
    for server in servers:
        body = bodies.get(server['id'])
        if body is None:
            continue
        hosts[common.host_of(body)] = hosts.get(common.host_of(body), 0) + 1
        if body['status'] == 'ERROR':
            problems.append('%s in ERROR (%s)' % (server['name'], (body.get('fault') or {}).get('message', '')[:120]))
        elif body.get('OS-EXT-STS:task_state') or body['status'] in ('MIGRATING', 'RESIZE', 'VERIFY_RESIZE'):
            problems.append('%s left %s/%s' % (server['name'], body['status'], body.get('OS-EXT-STS:task_state')))
        elif body['status'] != common.STATUS[server['state']]:
            problems.append('%s %s, was %s' % (server['name'], body['status'], server['state']))
        if moved and common.host_of(body) == SOURCE:
            problems.append('%s still on %s' % (server['name'], SOURCE))
    doubled = dict((guest, hosts) for guest, hosts in guest_files().items()
                   if guest in bodies and guest in set(s['id'] for s in servers) and len(hosts) > 1)
    if doubled:
        problems.append('held by two live computes at the end: %s' % doubled)
    forced = bool(service.get('forced_down'))
    if service_promise == 'forced_down':
        if not forced or service['status'] != 'disabled':
            problems.append('%s %s, forced_down %s (promised: disabled, forced down)' % (SOURCE, service['status'], forced))
    elif service['status'] != service_promise or forced:
        problems.append('%s %s, forced_down %s (promised: %s)' % (SOURCE, service['status'], forced, service_promise))
    problems += unaccounted(dict((s['id'], s['name']) for s in servers), results, settled_before, 'id')
    text = '%d/%d servers, in %s; %s %s%s' % (
        len(servers) - len(lost), len(servers), ', '.join('%s %d' % kv for kv in sorted(hosts.items(), key=str)),
        SOURCE, service['status'], ', forced down' if forced else '')
    return problems, text


def wait_moving(ids, migration_type=None, timeout=120, with_destination=False):
    """Until a move of one of ours off the source is in progress (migrations API, plain openstacksdk); with
    with_destination, one whose destination is chosen already (a queued record has none yet)."""
    api = dead_host.Api(CLOUD)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                records = api.call('GET', '/os-migrations', params={'source_compute': SOURCE}).json()['migrations']
            except common.openstack.exceptions.HttpException:
                records = []
            moving = [r for r in records if r['instance_uuid'] in ids and r['status'] in IN_PROGRESS
                      and (migration_type is None or r.get('migration_type') == migration_type)
                      and (r.get('dest_compute') or not with_destination)]
            if moving:
                return moving[0]
            time.sleep(0.3)
    finally:
        api.close()
    raise RuntimeError('no move of ours in progress off %s within %d s' % (SOURCE, timeout))


def wait_quiet(ids, timeout=240):
    """Until none of ours has a task or a move in progress (what a crashed run left goes on in Nova)."""
    api = dead_host.Api(CLOUD)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            bodies = [b for b in api.servers() if b['id'] in ids]
            records = api.call('GET', '/os-migrations', params={'source_compute': SOURCE}).json()['migrations']
            busy = [b for b in bodies if b.get('OS-EXT-STS:task_state')] + \
                [r for r in records if r['instance_uuid'] in ids and r['status'] in fault_truth.IN_PROGRESS]
            if not busy:
                return True
            time.sleep(1)
    finally:
        api.close()
    return False


# Set-up and give-back --------------------------------------------------------------------------------------

def all_computes_up(timeout=240):
    api = dead_host.Api(CLOUD)
    deadline = time.monotonic() + timeout
    try:
        while True:
            services = api.call('GET', '/os-services', params={'binary': 'nova-compute'}, microversion='2.53').json()['services']
            # Only the computes the suite uses: extra ones (sandbox/openstack/up --extra-computes) come and go.
            bad = [s for s in services if s['host'] in FAKE_HOSTS
                   and (s['status'] != 'enabled' or s['state'] != 'up' or s.get('forced_down'))]
            for service in bad:
                if service['host'] == SOURCE and service['state'] == 'up' and not service.get('forced_down'):
                    api.set_service(service['id'], {'status': 'enabled'})
            if not bad:
                return
            if time.monotonic() > deadline:
                raise RuntimeError('computes not back: %s' % [(s['host'], s['status'], s['state'], s.get('forced_down'))
                                                            for s in bad])
            time.sleep(3)
    finally:
        api.close()


def give_back():
    """Every service we killed is running again, the source un-forced and enabled, our servers deleted."""
    for name in ['nova-compute-%s' % host for host in FAKE_HOSTS] + ['nova-conductor', 'nova-api', 'rabbitmq',
                                                                      'placement-api']:
        if service_pid(name) is None:
            restart_service(name)
    api = dead_host.Api(CLOUD)
    try:
        forced = api.service(SOURCE).get('forced_down')
    finally:
        api.close()
    if forced:     # after an evacuation: restart its compute (clears the evacuation records), then un-force
        dead_host.give_back(CLOUD, SOURCE)
    common.delete_all(CLOUD)
    all_computes_up()


class Lock(object):
    """The sandbox's integration lock, held for one fault at a time."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, 'a')
        started = time.monotonic()
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        if time.monotonic() - started > 1:
            print('  waited %.0f s for %s' % (time.monotonic() - started, self.path), file=sys.stderr)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class Context(object):
    def __init__(self, workdir, config, copy_seconds):
        self.workdir = workdir
        self.config = config
        self.copy_seconds = copy_seconds

    def servers(self):
        common.delete_all(CLOUD)
        return common.create(CLOUD, len(MIX), SOURCE, self.copy_seconds)

    def playbook(self, label, **options):
        return Playbook(self.workdir, label, self.config, **options)


def drain_then_rerun(ctx, name, inject, after_first=None, with_destination=False):
    """A drain hit by inject(playbook, first moving record) -> note; after_first() once it ended (the fault
    taken away) -> note; a rerun when the first run failed."""
    servers = ctx.servers()
    ids = set(s['id'] for s in servers)
    watcher = TwoHostsWatcher.started(ids)
    first = ctx.playbook(name)
    try:
        record = wait_moving(ids, with_destination=with_destination)
        note = inject(first, record)
    except Exception:
        first.kill()     # never leave a drain running behind the suite's give-back
        raise
    result = first.wait()
    done = [summary(result, first.seconds)]
    if after_first:
        done.append(after_first())
    results, seconds, settled = [result], first.seconds, ()
    if result is None or result.get('failed'):
        wait_quiet(ids)
        settled = off_source(ids)
        rerun = ctx.playbook(name + '-rerun')
        results.append(rerun.wait())
        done.append('rerun: ' + summary(results[-1], rerun.seconds))
        seconds = time.monotonic() - first.started
    watcher.finish()
    problems, text = end_state(servers, results, 'disabled', settled)
    problems.extend(watcher.problems())
    return {'did': '%s; %s' % (note, ' / '.join(done)), 'seconds': seconds, 'end': text, 'problems': problems}


# The faults --------------------------------------------------------------------------------------------------

@fault('destination nova-compute killed (SIGKILL) mid-drain, started again after the run')
def dest_compute_killed(ctx):
    killed = []

    def inject(playbook, record):
        killed.append('nova-compute-%s' % record['dest_compute'])
        kill_service(killed[0])
        return '%s killed %.0f s into the drain' % (killed[0], time.monotonic() - playbook.started)

    def start_again():
        return '%s started again (%.0f s)' % (killed[0], restart_service(killed[0]))
    return drain_then_rerun(ctx, 'dest-killed', inject, start_again, with_destination=True)


def restart_mid_drain(ctx, service):
    def inject(playbook, record):
        at = time.monotonic() - playbook.started
        seconds = restart_service(service)
        return '%s restarted %.0f s into the drain (%.0f s)' % (service, at, seconds)
    return drain_then_rerun(ctx, service, inject)


@fault('nova-conductor restarted mid-drain')
def conductor_restarted(ctx):
    return restart_mid_drain(ctx, 'nova-conductor')


@fault('nova-api restarted mid-drain')
def api_restarted(ctx):
    return restart_mid_drain(ctx, 'nova-api')


@fault('RabbitMQ restarted mid-drain')
def rabbitmq_restarted(ctx):
    return restart_mid_drain(ctx, 'rabbitmq')


@fault('ansible-playbook killed (SIGKILL) mid-drain, then the same playbook rerun')
def playbook_killed_mid_drain(ctx):
    def inject(playbook, record):
        at = time.monotonic() - playbook.started
        killed = playbook.kill()
        return 'ansible-playbook killed %.0f s into the drain (%d processes)' % (at, len(killed.get('processes', {})))
    return drain_then_rerun(ctx, 'killed-drain', inject)


@fault('Placement unreachable (connections reset, 25 s) during the capacity check')
def placement_unreachable(ctx):
    pid_file = os.path.join(ctx.workdir, 'placement-proxy.pid')
    started = subprocess.run([PYTHON, FAULT_PROXY, '--listen', '127.0.0.1:0', '--upstream', 'http://127.0.0.1:8778',
                              '--pid-file', pid_file, '--log', os.path.join(ctx.workdir, 'placement-proxy.log'),
                              '--daemon', '--max-seconds', '900'], check=True, capture_output=True, text=True)
    listen = json.loads(started.stdout)['listen']
    try:
        with open(ctx.config) as handle:
            clouds = yaml.safe_load(handle)
        proxied = dict(clouds['clouds'][CLOUD], placement_endpoint_override='http://%s' % listen)
        clouds['clouds']['vmops-faults-placement'] = proxied
        config = os.path.join(ctx.workdir, 'clouds.yaml')
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as handle:
            yaml.safe_dump(clouds, handle)
        servers = ctx.servers()
        ids = set(s['id'] for s in servers)
        subprocess.run([PYTHON, FAULT_PROXY, 'set', '--listen', listen, 'outage_seconds=25', 'outage_mode=reset'],
                       check=True, stdout=subprocess.DEVNULL)
        run = Playbook(ctx.workdir, 'placement', config, cloud='vmops-faults-placement')
        result = run.wait()
        shown = json.loads(subprocess.run([PYTHON, FAULT_PROXY, 'show', '--listen', listen], check=True,
                                          capture_output=True, text=True).stdout)
        done = ['%d Placement requests reset; ' % shown.get('counters', shown).get('injected_reset', 0)
                + summary(result, run.seconds)]
        results, seconds, settled = [result], run.seconds, ()
        if result is None or result.get('failed'):
            wait_quiet(ids)
            settled = off_source(ids)
            rerun = Playbook(ctx.workdir, 'placement-rerun', config, cloud='vmops-faults-placement')
            results.append(rerun.wait())
            done.append('rerun: ' + summary(results[-1], rerun.seconds))
            seconds = time.monotonic() - run.started
        problems, text = end_state(servers, results, 'disabled', settled)
        return {'did': ' / '.join(done), 'seconds': seconds, 'end': text, 'problems': problems}
    finally:
        subprocess.run([PYTHON, FAULT_PROXY, 'stop', '--pid-file', pid_file], stdout=subprocess.DEVNULL)


@fault('source nova-compute killed (SIGKILL) mid-drain, then host_evacuate mode=evacuate as the disaster_recovery role runs it')
def source_compute_killed(ctx):
    servers = ctx.servers()
    ids = set(s['id'] for s in servers)
    watcher = TwoHostsWatcher.started(ids)
    drain = ctx.playbook('source-killed', deadline=30, timeout=120)
    wait_moving(ids)
    at = time.monotonic() - drain.started
    kill_service('nova-compute-%s' % SOURCE)
    killed_at = time.time()
    result = drain.wait()
    # The bar for this fault: once the source is dead, the drain stops sending moves.
    late = sorted((common.iso_to_epoch(entry['started']) - killed_at, entry['name'])
                  for entry in (result or {}).get('servers') or []
                  if entry.get('started') and common.iso_to_epoch(entry['started']) > killed_at + 5)
    done = ['nova-compute-%s killed %.0f s into the drain; drain: %s' % (SOURCE, at, summary(result, drain.seconds))]
    settled = off_source(ids)
    evacuation = ctx.playbook('source-killed-evacuate', **EVACUATE, timeout=240)
    final = evacuation.wait()
    done.append('evacuate: ' + summary(final, evacuation.seconds))
    seconds = time.monotonic() - drain.started
    watcher.finish()
    problems, text = end_state(servers, [result, final], 'forced_down', settled)
    if result is not None and not result.get('failed'):
        problems.append('the drain did not report the dead source')
    if late:
        problems.append('the drain kept sending after the source died: %d moves started %.0f-%.0f s after the kill (%s)'
                        % (len(late), late[0][0], late[-1][0], ', '.join(name for _s, name in late)))
    problems.extend(watcher.problems())
    return {'did': '; '.join(done), 'seconds': seconds, 'end': text, 'problems': problems}


@fault('ansible-playbook killed (SIGKILL) mid-evacuation, then the same playbook rerun')
def playbook_killed_mid_evacuation(ctx):
    servers = ctx.servers()
    ids = set(s['id'] for s in servers)
    kill_service('nova-compute-%s' % SOURCE)
    watcher = TwoHostsWatcher.started(ids)
    first = ctx.playbook('killed-evacuate', **EVACUATE)
    wait_moving(ids, 'evacuation')
    at = time.monotonic() - first.started
    killed = first.kill()
    done = ['%s dead; ansible-playbook killed %.0f s into the evacuation (%d processes)' % (
        SOURCE, at, len(killed.get('processes', {})))]
    wait_quiet(ids)
    settled = off_source(ids)
    rerun = ctx.playbook('killed-evacuate-rerun', **EVACUATE)
    final = rerun.wait()
    done.append('rerun: ' + summary(final, rerun.seconds))
    watcher.finish()
    problems, text = end_state(servers, [None, final], 'forced_down', settled)
    problems.extend(watcher.problems())
    return {'did': '; '.join(done), 'seconds': time.monotonic() - first.started, 'end': text, 'problems': problems}


@fault('a dead host whose nova-compute comes back in the middle of its evacuation')
def dead_host_comes_back(ctx):
    servers = ctx.servers()
    ids = set(s['id'] for s in servers)
    kill_service('nova-compute-%s' % SOURCE)
    watcher = TwoHostsWatcher.started(ids)
    run = ctx.playbook('comes-back', **EVACUATE)
    wait_moving(ids, 'evacuation')
    at = time.monotonic() - run.started
    back = restart_service('nova-compute-%s' % SOURCE)
    result = run.wait()
    done = ['%s dead, its nova-compute started again %.0f s into the evacuation (%.0f s); %s' % (
        SOURCE, at, back, summary(result, run.seconds))]
    results, seconds, settled = [result], run.seconds, ()
    noticed = (result or {}).get('ended_early', {}).get('reason') == 'source_alive'
    if result is None or result.get('failed'):
        time.sleep(3)   # the returned compute's own clean-up of evacuated guests, seen by the watcher
        wait_quiet(ids)
        if noticed:
            # What the run asks for: fence the host (here: its nova-compute killed again, as a power-off
            # would), then run the evacuation again.
            kill_service('nova-compute-%s' % SOURCE)
            done.append('%s fenced again (its nova-compute killed)' % SOURCE)
        settled = off_source(ids)
        rerun = ctx.playbook('comes-back-rerun', **EVACUATE)
        results.append(rerun.wait())
        done.append('rerun: ' + summary(results[-1], rerun.seconds))
        seconds = time.monotonic() - run.started
    time.sleep(3)
    watcher.finish()
    problems, text = end_state(servers, results, 'forced_down', settled)
    if not noticed:
        problems.insert(0, 'the evacuation did not notice that %s came back' % SOURCE)
    problems.extend(watcher.problems())
    return {'did': '; '.join(done), 'seconds': seconds, 'end': text, 'problems': problems}


# libvirt: hosts h1 -> h2 of sandbox/libvirt ----------------------------------------------------------------

LIBVIRT_PLAYBOOK = """\
- name: One libvirt host_evacuate run of the fault suite
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Drain the source into the destination
      vmops.lifecycle.host_evacuate:
        libvirt_uri: "{{ fault_source }}"
        host: "{{ fault_source }}"
        target_host: "{{ fault_target }}"
        migration_uri: "{{ fault_migration_uri }}"
        instances: "{{ fault_instances }}"
        window: 2
        migration_bandwidth: 8
        deadline: 120
        timeout: 300
      register: fault_result
      ignore_errors: true

    - name: Keep the result for the suite
      ansible.builtin.copy:
        content: "{{ fault_result | to_json }}"
        dest: "{{ fault_result_file }}"
        mode: "0600"
"""
LIBVIRT_LOCK = '/var/tmp/vmops-libvirt-integration.lock'
GUESTCTL = os.path.join(REPO, 'sandbox', 'libvirt', 'guestctl.py')
LIBVIRTD_CTL = os.path.join(REPO, 'tests', 'integration', 'targets', 'setup_libvirt_hosts', 'files', 'libvirtd-ctl')
LIBVIRT_PREFIX = 'vmops-faults-lv-'
# 8 domains: 3 running, 2 paused, 1 suspended (managed save), 2 stopped
LIBVIRT_MIX = ['running'] * 3 + ['paused'] * 2 + ['suspended'] + ['stopped'] * 2


def libvirt_hosts():
    values = {}
    with open(os.environ.get('VMOPS_SANDBOX_DIR', '/var/tmp/vmops-sandbox') + '/libvirt/hosts.env') as handle:
        for line in handle:
            key, _, value = line.strip().partition('=')
            if key and not key.startswith('#'):
                values[key] = value.strip("'")
    return values


def libvirt_state(dom):
    import libvirt
    state = dom.state()[0]
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return 'suspended' if dom.hasManagedSaveImage(0) else 'stopped'
    return {libvirt.VIR_DOMAIN_RUNNING: 'running', libvirt.VIR_DOMAIN_PAUSED: 'paused'}.get(state, 'other:%d' % state)


def libvirt_places(uris, names):
    """name -> {uri: state or None}, read with libvirt-python (what virsh reads), plus whether a job runs."""
    import libvirt
    places = dict((name, {}) for name in names)
    jobs = []
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            for name in names:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    places[name][uri] = None
                    continue
                places[name][uri] = libvirt_state(dom)
                if dom.isActive() and dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                    jobs.append(name)
        finally:
            conn.close()
    return places, jobs


def libvirt_guests(source):
    """Define and start the domains on the source, then pause and managed-save some (guestctl, virsh verbs)."""
    import libvirt
    names = ['%s%d-%s' % (LIBVIRT_PREFIX, index, state) for index, state in enumerate(LIBVIRT_MIX)]
    for name, state in zip(names, LIBVIRT_MIX):
        subprocess.run([PYTHON, GUESTCTL, 'define', '--uri', source, name] + ([] if state == 'stopped' else ['--start']),
                       check=True, stdout=subprocess.DEVNULL)
    for name, state in zip(names, LIBVIRT_MIX):
        if state == 'suspended':
            subprocess.run([PYTHON, GUESTCTL, 'wait-boot', '--uri', source, name, '--timeout', '120'], check=True,
                           stdout=subprocess.DEVNULL)
    conn = libvirt.open(source)
    try:
        for name, state in zip(names, LIBVIRT_MIX):
            if state == 'paused':
                conn.lookupByName(name).suspend()
            elif state == 'suspended':
                conn.lookupByName(name).managedSave(0)
    finally:
        conn.close()
    return names


def libvirt_cleanup(hosts, names):
    for uri in hosts:
        for name in names:
            subprocess.run([PYTHON, GUESTCTL, 'undefine', '--uri', uri, name], stdout=subprocess.DEVNULL)


def wait_migrating(source, names, timeout=120):
    """The first of ours with a migration job on the source (libvirt-python jobInfo)."""
    import libvirt
    conn = libvirt.open(source)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for name in names:
                try:
                    dom = conn.lookupByName(name)
                    if dom.isActive() and dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                        return name
                except libvirt.libvirtError:
                    continue
            time.sleep(0.1)
    finally:
        conn.close()
    raise RuntimeError('no migration of ours on %s within %d s' % (source, timeout))


def libvirt_end_state(uris, names, results, settled_before, exempt=()):
    """Each domain on exactly one host, active on at most one, no job left, in its state (except the exempt,
    whose state a fault changed), off the source, every domain in the final report."""
    places, jobs = libvirt_places(uris, names)
    problems = []
    where = {}
    for name, state in zip(names, LIBVIRT_MIX):
        found = dict((uri, st) for uri, st in places[name].items() if st is not None)
        if not found:
            problems.append('%s lost' % name)
            continue
        if len(found) > 1:
            problems.append('%s on both hosts: %s' % (name, found))
        uri, now = sorted(found.items())[-1]
        label = 'h1' if uri == uris[0] else 'h2'
        where[label] = where.get(label, 0) + 1
        if now != state and name not in exempt:
            problems.append('%s %s, was %s' % (name, now, state))
        if uri == uris[0] and name not in exempt:
            problems.append('%s still on the source' % name)
    if jobs:
        problems.append('migration jobs left: %s' % ', '.join(jobs))
    problems += unaccounted(dict((name, name) for name in names), results, settled_before, 'name')
    text = '%d/%d domains found (virsh view), %s' % (
        len(names) - sum(1 for p in problems if p.endswith(' lost')), len(names),
        ', '.join('%s %d' % kv for kv in sorted(where.items())))
    return problems, text, places


def shorten(result, source, target):
    """The hosts by their sandbox names in the run's message: a URI in every sentence hides what happened."""
    if result and result.get('msg'):
        result['msg'] = result['msg'].replace(source, 'h1').replace(target, 'h2')
    return result


def libvirt_drain(ctx, label, inject, after_first=None, exempt_of=lambda injected: ()):
    hosts = libvirt_hosts()
    source, target = hosts['VMOPS_LIBVIRT_URI_1'], hosts['VMOPS_LIBVIRT_URI_2']
    names = ['%s%d-%s' % (LIBVIRT_PREFIX, index, state) for index, state in enumerate(LIBVIRT_MIX)]
    libvirt_cleanup((source, target), names)
    options = dict(text=LIBVIRT_PLAYBOOK, source=source, target=target, instances=names,
                   migration_uri=hosts['VMOPS_LIBVIRT_MIGRATION_URI_2'])
    try:
        libvirt_guests(source)
        first = Playbook(ctx.workdir, label, ctx.config, **options)
        moving = wait_migrating(source, names)
        injected = inject(first, source, target, moving)
        result = shorten(first.wait(), source, target)
        done = [injected['note'], summary(result, first.seconds)]
        if after_first:
            done.append(after_first(source, target))
        results, seconds, settled = [result], first.seconds, ()
        if result is None or result.get('failed'):
            places, _jobs = libvirt_places((target,), names)
            settled = set(name for name in names if places[name][target] is not None)
            rerun = Playbook(ctx.workdir, label + '-rerun', ctx.config, **options)
            results.append(shorten(rerun.wait(), source, target))
            done.append('rerun: ' + summary(results[-1], rerun.seconds))
            seconds = time.monotonic() - first.started
        problems, text, places = libvirt_end_state((source, target), names, results, settled, exempt_of(injected))

        for name in exempt_of(injected):
            text += '; %s (crashed) %s' % (name, dict((('h1' if u == source else 'h2'), st)
                                                     for u, st in places[name].items() if st))
        return {'did': '; '.join(done), 'seconds': seconds, 'end': text, 'problems': problems}
    finally:
        subprocess.run([LIBVIRTD_CTL, target, 'start'], stdout=subprocess.DEVNULL)
        libvirt_cleanup((source, target), names)


@fault('libvirt: destination libvirtd killed (SIGKILL) mid-migration, started again after the run', 'libvirt')
def libvirt_dest_killed(ctx):
    def inject(playbook, source, target, moving):
        time.sleep(1)   # mid-copy, not at the migration's first step
        subprocess.run([LIBVIRTD_CTL, target, 'kill'], check=True, stdout=subprocess.DEVNULL)
        return {'note': 'h2 libvirtd killed %.0f s into the drain, while %s migrated' % (
            time.monotonic() - playbook.started, moving)}

    def start_again(source, target):
        subprocess.run([LIBVIRTD_CTL, target, 'start'], check=True, stdout=subprocess.DEVNULL)
        return 'h2 libvirtd started again'
    return libvirt_drain(ctx, 'lv-dest-killed', inject, start_again)


@fault('libvirt: the guest crashes mid-migration (destroyed on the source)', 'libvirt')
def libvirt_guest_crash(ctx):
    import libvirt

    def inject(playbook, source, target, moving):
        time.sleep(0.5)
        conn = libvirt.open(source)
        try:
            conn.lookupByName(moving).destroy()
        finally:
            conn.close()
        return {'note': '%s destroyed on h1 %.0f s into the drain, mid-migration' % (
            moving, time.monotonic() - playbook.started), 'crashed': moving}
    return libvirt_drain(ctx, 'lv-guest-crash', inject, exempt_of=lambda injected: (injected['crashed'],))


# Running and reporting ---------------------------------------------------------------------------------------

def run_fault(entry, ctx):
    print('%s: %s' % (entry['name'], entry['title']), file=sys.stderr)
    with Lock(LIBVIRT_LOCK if entry['backend'] == 'libvirt' else OS_LOCK):
        started = time.monotonic()
        outcome = {'did': '', 'seconds': None, 'end': '', 'problems': []}
        try:
            outcome = entry['run'](ctx)
        except Exception as error:  # the suite reports what broke and goes on with the next fault
            outcome['problems'] = ['the suite could not finish this fault: %s: %s' % (type(error).__name__, error)]
        finally:
            try:
                if entry['backend'] == 'openstack':
                    give_back()
                outcome['restored'] = True
            except Exception as error:
                outcome['problems'].append('sandbox not given back: %s' % error)
                outcome['restored'] = False
        outcome['wall'] = time.monotonic() - started
    outcome.update(name=entry['name'], title=entry['title'], survived=not outcome['problems'])
    print('  %s' % json.dumps(outcome, default=str), file=sys.stderr)
    return outcome


def sandbox_names(text):
    """The libvirt sandbox's host URIs as h1/h2 (the collection's messages name hosts by their URIs)."""
    try:
        hosts = libvirt_hosts()
    except OSError:
        return text
    for key, value in hosts.items():
        if key.startswith('VMOPS_LIBVIRT_URI_'):
            text = text.replace(value, 'h' + key.rsplit('_', 1)[1])
    return text


def table(outcomes):
    lines = ['| fault | what the collection did | time to end state | end state (checked without the collection) '
             '| survived |', '|---|---|---:|---|---|']
    titles = dict((f['name'], f['title']) for f in FAULTS)
    for o in outcomes:
        end = o['end'] + ('; **%s**' % '; '.join(o['problems']) if o['problems'] else '')
        lines.append('| %s | %s | %s | %s | %s |' % (
            titles.get(o['name'], o['title']), sandbox_names(o['did']).replace('|', '/'), '%.0f s' % o['seconds'] if o['seconds'] else '-',
            end.replace('|', '/'), 'yes' if o['survived'] else '**no**'))
    survived = sum(1 for o in outcomes if o['survived'])
    lines += ['', '**Totals: %d faults tried, %d survived.**' % (len(outcomes), survived)]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', action='append', choices=[f['name'] for f in FAULTS])
    parser.add_argument('--copy-seconds', type=float, default=8,
                        help='seconds each live migration takes in the fake driver (so a fault lands mid-drain)')
    parser.add_argument('--markdown', help='write the table (between the markers of docs/reliability.md, or a new file)')
    parser.add_argument('--json', help='write every outcome as JSON too')
    parser.add_argument('--from-json', action='append', metavar='FILE',
                        help='build the table from the --json files of earlier runs instead of running faults')
    parser.add_argument('--list', action='store_true')
    args = parser.parse_args()
    if args.from_json:
        outcomes = {}
        for path in args.from_json:    # a later file's outcome of the same fault replaces an earlier one
            with open(path) as handle:
                outcomes.update((o['name'], o) for o in json.load(handle))
        order = [f['name'] for f in FAULTS]
        text = table(sorted(outcomes.values(), key=lambda o: order.index(o['name'])))
        print(text)
        if args.markdown:
            write_markdown(args.markdown, text)
        return
    if args.list:
        for entry in FAULTS:
            print('%-32s %s' % (entry['name'], entry['title']))
        return
    config = os.environ.get('OS_CLIENT_CONFIG_FILE') or os.path.join(SANDBOX, 'clouds.yaml')
    os.environ['OS_CLIENT_CONFIG_FILE'] = config
    outcomes = []
    # Kept: each run's playbook, log and full result are the evidence behind a row of the table.
    workdir = tempfile.mkdtemp(prefix='vmops-faults-')
    print('playbooks, logs and results in %s' % workdir, file=sys.stderr)
    ctx = Context(workdir, config, args.copy_seconds)
    for entry in FAULTS:
        if args.only and entry['name'] not in args.only:
            continue
        outcomes.append(run_fault(entry, ctx))
    text = table(outcomes)
    print(text)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(outcomes, handle, indent=1, default=str)
    if args.markdown:
        write_markdown(args.markdown, text)


BEGIN, END = '<!-- fault_suite table: begin -->', '<!-- fault_suite table: end -->'


def write_markdown(path, text):
    """Replace the table between the markers, so the prose around it stays; a new file gets the table alone."""
    try:
        with open(path) as handle:
            doc = handle.read()
    except FileNotFoundError:
        doc = ''
    block = '%s\n%s\n%s' % (BEGIN, text, END)
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = block + '\n'
    with open(path, 'w') as handle:
        handle.write(doc)


if __name__ == '__main__':
    main()
