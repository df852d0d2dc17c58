"""Benchmark: draining a compute host of 24 mixed-state servers on the OpenStack sandbox.

Three approaches in the same run, each on a fresh set of servers booted on --host (fake1):

  naive   one server at a time: send its move, poll that server (GET every 0.5 s) until it has
          settled on another host, then the next one (what a simple script does)
  burst   every move sent at once, then one shared list poll (every 0.25 s) until all settled:
          the lower bound on wall time (no window at all)
  ours    vmops.lifecycle.host_evacuate's core, in-process: module_utils/moves.run() with the
          OpenStack MoveBackend (openstack_moves.OpenStackMoves), from the collection under
          .build/collections, exactly as the module calls it (disable first, window, shared polls)

The moves are the same for every approach: running and paused servers move live
(block_migration auto), stopped ones cold (migrate + confirm), suspended ones are resumed, moved
live and suspended again; locked servers move like the others (the admin may).

Measured: wall seconds from the first request of the drain until every server has settled on
another host, HTTP requests (counted on each approach's own SDK session, authentication included;
for ours, those made inside poll() are the shared reads), and for ours the lag from each move's
completion to the core noticing it.  Completion is seen by an independent poller (its own connection,
a servers list and a migrations list every 0.1 s, not counted): the later of the server first seen
settled elsewhere in its state and its newest migration record first seen closed (Nova frees the
compute's migration slot only then).  Noticing is the `finished` time the core records for it.  The
lag from the server settled alone is reported too.

The fake driver's live migration is instant unless a server's metadata asks otherwise: --copy-seconds N
boots every server with vmops_fake_live_migration_seconds=N, the memory copy a real hypervisor does
(seconds to minutes).  With 0 the figures are Nova's own control-plane work on this machine.  The
sandbox's fake computes run max_concurrent_live_migrations = 4; --window 4 matches it.

Usage (the sandbox must be up; collection linked: . scripts/lib.sh && link_collection):
  OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \\
  .venv/bin/python bench/drain_openstack.py [--count 24] [--host fake1] [--copy-seconds 0] [--window 4]
      [--markdown FILE] [--only ours]
"""

import argparse
import calendar
import json
import os
import statistics
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.build', 'collections'))

import openstack  # noqa: E402

MICROVERSION = '2.73'
PREFIX = 'vmops-bench-drain-'
SETTLED = ('ACTIVE', 'PAUSED', 'SHUTOFF', 'SUSPENDED')
# The mix of 24 (scaled for other counts): state, locked
MIX = [('running', False)] * 10 + [('running', True)] * 4 + [('paused', False)] * 4 + \
      [('stopped', False)] * 4 + [('suspended', False)] * 2
STATUS = {'running': 'ACTIVE', 'paused': 'PAUSED', 'stopped': 'SHUTOFF', 'suspended': 'SUSPENDED'}
# Migration record statuses after which the compute holds no slot for it any more.
RECORD_CLOSED = ('completed', 'confirmed', 'error', 'failed', 'cancelled', 'reverted', 'done')


class Counted(object):
    """An SDK connection whose HTTP requests are counted (authentication included)."""

    def __init__(self, cloud):
        self.conn = openstack.connect(cloud=cloud)
        self.count = 0
        session = self.conn.session
        original = session.request

        def counted(url, method, *args, **kwargs):
            self.count += 1
            return original(url, method, *args, **kwargs)
        session.request = counted

    def call(self, method, url, **kwargs):
        response = self.conn.compute.request(url, method, microversion=MICROVERSION, **kwargs)
        openstack.exceptions.raise_from_response(response)
        return response

    def action(self, server_id, body):
        return self.call('POST', '/servers/%s/action' % server_id, json=body)

    def servers(self):
        return self.call('GET', '/servers/detail', params={'name': '^%s' % PREFIX}).json()['servers']

    def server(self, server_id):
        return self.call('GET', '/servers/%s' % server_id).json()['server']

    def close(self):
        self.conn.close()


def host_of(body):
    return body.get('OS-EXT-SRV-ATTR:host')


def settled_elsewhere(body, source, status):
    return host_of(body) != source and body.get('OS-EXT-STS:task_state') is None and body['status'] == status


# The moves, as steps: (request body, predicate on the server once that step is done) -------------------

def steps_for(state, source):
    live = ({'os-migrateLive': {'host': None, 'block_migration': 'auto'}},
            lambda b, status: host_of(b) != source and b.get('OS-EXT-STS:task_state') is None
            and b['status'] == status)
    if state in ('running', 'paused'):
        return [(live[0], lambda b: live[1](b, STATUS[state]))]
    if state == 'stopped':
        return [({'migrate': None}, lambda b: b['status'] == 'VERIFY_RESIZE' and b.get('OS-EXT-STS:task_state') is None),
                ({'confirmResize': None}, lambda b: settled_elsewhere(b, source, 'SHUTOFF'))]
    if state == 'suspended':
        return [({'resume': None}, lambda b: b['status'] == 'ACTIVE' and b.get('OS-EXT-STS:task_state') is None),
                (live[0], lambda b: live[1](b, 'ACTIVE')),
                ({'suspend': None}, lambda b: settled_elsewhere(b, source, 'SUSPENDED'))]
    raise ValueError(state)


def check_error(body):
    if body['status'] == 'ERROR':
        raise RuntimeError('%s went to ERROR: %s' % (body['name'], (body.get('fault') or {}).get('message')))


def naive(cloud, servers, source, timeout=600):
    api = Counted(cloud)
    started = time.monotonic()
    for server in servers:
        for body, done in steps_for(server['state'], source):
            api.action(server['id'], body)
            deadline = time.monotonic() + timeout
            while True:
                time.sleep(0.5)
                current = api.server(server['id'])
                check_error(current)
                if done(current):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError('naive: %s timed out in %s' % (server['name'], current['status']))
    seconds = time.monotonic() - started
    count = api.count
    api.close()
    return {'seconds': seconds, 'requests': count}


def burst(cloud, servers, source, timeout=600):
    api = Counted(cloud)
    started = time.monotonic()
    progress = {}
    for server in servers:
        steps = steps_for(server['state'], source)
        api.action(server['id'], steps[0][0])
        progress[server['id']] = [steps, 0]
    deadline = time.monotonic() + timeout
    while progress:
        time.sleep(0.25)
        for body in api.servers():
            entry = progress.get(body['id'])
            if entry is None:
                continue
            check_error(body)
            steps, index = entry
            if steps[index][1](body):
                if index + 1 == len(steps):
                    del progress[body['id']]
                else:
                    api.action(body['id'], steps[index + 1][0])
                    entry[1] = index + 1
        if time.monotonic() > deadline:
            raise RuntimeError('burst: %d servers not settled' % len(progress))
    seconds = time.monotonic() - started
    count = api.count
    api.close()
    return {'seconds': seconds, 'requests': count}


class Poller(threading.Thread):
    """Independent observer (its own connection, not counted), every `interval` seconds:
      settled[id]   first wall time the server is seen settled on another host in its wanted state
      closed[id]    first wall time its newest migration record off the source is closed (completed,
                    confirmed, error ...): Nova frees the compute's migration slot only then
    A move is complete at the later of the two (a suspended server's record closes before its suspend)."""

    def __init__(self, cloud, servers, source, interval=0.1):
        super(Poller, self).__init__(daemon=True)
        self.api = Counted(cloud)
        self.wanted = dict((s['id'], STATUS[s['state']]) for s in servers)
        self.source = source
        self.interval = interval
        self.settled = {}
        self.closed = {}
        self.since = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() - 60))
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and (len(self.settled) < len(self.wanted) or len(self.closed) < len(self.wanted)):
            now = time.time()
            try:
                bodies = self.api.servers()
                records = self.api.call('GET', '/os-migrations', params={
                    'source_compute': self.source, 'changes-since': self.since}).json()['migrations']
            except Exception:  # a transient API error: look again
                continue
            for body in bodies:
                status = self.wanted.get(body['id'])
                if status and body['id'] not in self.settled and settled_elsewhere(body, self.source, status):
                    self.settled[body['id']] = now     # the list was requested at `now`: the earliest it could be
            newest = {}
            for record in records:
                known = newest.get(record['instance_uuid'])
                if known is None or record['id'] > known['id']:
                    newest[record['instance_uuid']] = record
            for server_id, record in newest.items():
                if server_id in self.wanted and server_id not in self.closed and record['status'] in RECORD_CLOSED:
                    self.closed[server_id] = now
            time.sleep(self.interval)
        self.api.close()

    def complete(self, server_id):
        if server_id not in self.settled or server_id not in self.closed:
            return None
        return max(self.settled[server_id], self.closed[server_id])


def iso_to_epoch(text):
    main, _, fraction = text.rstrip('Z').partition('.')
    return calendar.timegm(time.strptime(main, '%Y-%m-%dT%H:%M:%S')) + (float('0.' + fraction) if fraction else 0.0)


def ours(cloud, servers, source, window=None):
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.moves import OpenStackMoves
    poller = Poller(cloud, servers, source)
    poller.start()
    started = time.monotonic()
    with OpenStackMoves({'cloud': cloud, 'interface': 'public'}) as backend:
        # Requests made inside poll() are the shared reads (one or two a cycle, for all servers).
        shared = {'reads': 0}
        poll = backend.poll

        def counted_poll(handles):
            before = backend.request_count()
            try:
                return poll(handles)
            finally:
                shared['reads'] += backend.request_count() - before
        backend.poll = counted_poll
        request = moves.MoveRequest(host=source, mode='drain', window=window,
                                    disabled_reason='vmops bench drain')
        result = moves.run(backend, request)
        requests = backend.request_count()
        backend.set_service(source, disabled=False)
    seconds = time.monotonic() - started
    poller.join(30)
    poller.stop.set()
    lags, lags_settled = [], []
    for entry in result['servers']:
        if not entry.get('finished'):
            continue
        noticed = iso_to_epoch(entry['finished'])
        if poller.complete(entry['id']) is not None:
            lags.append(noticed - poller.complete(entry['id']))
        if entry['id'] in poller.settled:
            lags_settled.append(noticed - poller.settled[entry['id']])
    failed = [s for s in result['servers'] if s['outcome'] != 'moved']
    if failed:
        raise RuntimeError('ours: not moved: %s' % json.dumps(failed))
    return {'seconds': seconds, 'requests': requests, 'lags': lags, 'lags_settled': lags_settled,
            'totals': result['totals'], 'unseen': len(servers) - len(lags), 'shared_reads': shared['reads']}


# Setup and cleanup (plain SDK, not counted) -------------------------------------------------------------

def wait_all(api, predicate, what, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        bodies = api.servers()
        for body in bodies:
            check_error(body)
        pending = [b['name'] for b in bodies if not predicate(b)]
        if not pending:
            return bodies
        if time.monotonic() > deadline:
            raise RuntimeError('%s: still waiting for %s' % (what, pending))
        time.sleep(1)


def wait_quiet(cloud, host, prefix, timeout=1800):
    """Wait until the host is enabled, up, not forced down and holds no server but ours: the sandbox's
    fake hosts are shared with other test suites, and a drain or evacuation would move theirs too."""
    api = Counted(cloud)
    deadline = time.monotonic() + timeout
    while True:
        service = api.call('GET', '/os-services', params={'host': host, 'binary': 'nova-compute'}).json()['services'][0]
        foreign = [s['name'] for s in api.call('GET', '/servers/detail', params={'all_tenants': 1, 'host': host}).json()['servers']
                   if not s['name'].startswith(prefix)]
        if service['status'] == 'enabled' and service['state'] == 'up' and not service.get('forced_down') and not foreign:
            break
        if time.monotonic() > deadline:
            raise RuntimeError('%s stayed busy: %s, %s' % (host, service, foreign))
        print('waiting for %s: %s/%s, foreign servers %s' % (host, service['status'], service['state'], foreign),
              file=sys.stderr)
        time.sleep(10)
    api.close()


def create(cloud, count, host, copy_seconds=0):
    wait_quiet(cloud, host, PREFIX)
    api = Counted(cloud)
    image = api.conn.image.find_image('vmops-guest', ignore_missing=False)
    network = api.conn.network.find_network('private', ignore_missing=False)
    mix = (MIX * (count // len(MIX) + 1))[:count] if count != len(MIX) else MIX
    servers = []
    for index, (state, locked) in enumerate(mix):
        body = {'name': '%s%02d' % (PREFIX, index), 'imageRef': image.id, 'flavorRef': 'vmops.tiny',
                'networks': [{'uuid': network.id}], 'availability_zone': 'nova:%s' % host}
        if copy_seconds:
            body['metadata'] = {'vmops_fake_live_migration_seconds': '%g' % copy_seconds}
        server_id = api.call('POST', '/servers', json={'server': body}).json()['server']['id']
        servers.append({'id': server_id, 'name': body['name'], 'state': state, 'locked': locked})
    wait_all(api, lambda b: b['status'] == 'ACTIVE' and b.get('OS-EXT-STS:task_state') is None, 'boot')
    verbs = {'paused': {'pause': None}, 'stopped': {'os-stop': None}, 'suspended': {'suspend': None}}
    for server in servers:
        if server['state'] in verbs:
            api.action(server['id'], verbs[server['state']])
        if server['locked']:
            api.action(server['id'], {'lock': {'locked_reason': 'vmops bench: a locked server'}})
    wanted = dict((s['id'], STATUS[s['state']]) for s in servers)
    bodies = wait_all(api, lambda b: b['status'] == wanted[b['id']] and b.get('OS-EXT-STS:task_state') is None,
                      'states')
    assert all(host_of(b) == host for b in bodies), [(b['name'], host_of(b)) for b in bodies]
    api.close()
    return servers


def delete_all(cloud):
    api = Counted(cloud)
    for body in api.servers():
        if body.get('locked'):
            api.action(body['id'], {'unlock': None})
        api.call('DELETE', '/servers/%s' % body['id'])
    deadline = time.monotonic() + 300
    while api.servers() and time.monotonic() < deadline:
        time.sleep(1)
    api.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cloud', default='vmops-admin')
    parser.add_argument('--host', default='fake1')
    parser.add_argument('--count', type=int, default=24)
    parser.add_argument('--window', type=int, help="ours: moves in flight (default: the module's)")
    parser.add_argument('--copy-seconds', type=float, default=0,
                        help='seconds each live migration takes in the fake driver (the memory copy a real '
                             'hypervisor does; 0: Nova\'s own work only)')
    parser.add_argument('--only', action='append', choices=['naive', 'burst', 'ours'])
    parser.add_argument('--markdown')
    args = parser.parse_args()
    if args.host not in ('fake1', 'fake2', 'fake3'):
        sys.exit('drain only fake1, fake2 or fake3 (the hosts the contracts allow)')

    approaches = args.only or ['naive', 'burst', 'ours']
    results = {}
    delete_all(args.cloud)
    try:
        for name in approaches:
            servers = create(args.cloud, args.count, args.host, args.copy_seconds)
            print('%s: %d servers on %s' % (name, len(servers), args.host), file=sys.stderr)
            if name == 'ours':
                results[name] = ours(args.cloud, servers, args.host, args.window)
            else:
                results[name] = globals()[name](args.cloud, servers, args.host)
            print('%s: %.1f s, %d requests' % (name, results[name]['seconds'], results[name]['requests']),
                  file=sys.stderr)
            delete_all(args.cloud)
    finally:
        delete_all(args.cloud)
    print(report(results, args))
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(report(results, args) + '\n')


def report(results, args):
    lines = ['Drain of %d servers off %s (%s), OpenStack sandbox; live migrations take %g s in the fake driver' % (
        args.count, args.host, ', '.join('%d %s%s' % (n, s, ' locked' if lk else '') for (s, lk), n in _mix_counts(args.count)),
        args.copy_seconds),
        '', '| approach | wall s | HTTP requests | requests per server | vs naive | vs burst |', '|---|---:|---:|---:|---:|---:|']
    for name in ('naive', 'burst', 'ours'):
        if name not in results:
            continue
        r = results[name]
        vs = lambda other: ('%.2f×' % (r['seconds'] / results[other]['seconds'])) if other in results else '-'
        lines.append('| %s | %.1f | %d | %.2f | %s | %s |' % (name, r['seconds'], r['requests'],
                                                            r['requests'] / float(args.count), vs('naive'), vs('burst')))
    if 'ours' in results:
        r = results['ours']
        totals = r['totals']
        lags = r['lags']
        settled = r['lags_settled']
        lines += ['', 'ours: window %s, at most %s in flight, %s poll cycles making %s shared reads, %.2f requests '
                  'per server besides them; lag from a move\'s completion (server settled and its migration record closed) to '
                  'the core noticing it, over %d moves: median %.2f s, max %.2f s (%d moves not seen complete by '
                  'the poller); from the server settled alone: median %.2f s, max %.2f s' % (
                      totals.get('window'), totals.get('max_in_flight'), totals.get('polls'), r['shared_reads'],
                      (r['requests'] - r['shared_reads']) / float(args.count), len(lags),
                      _median(lags), max(lags) if lags else float('nan'), r['unseen'],
                      _median(settled), max(settled) if settled else float('nan'))]
    return '\n'.join(lines)


def _median(values):
    return statistics.median(values) if values else float('nan')


def _mix_counts(count):
    mix = (MIX * (count // len(MIX) + 1))[:count] if count != len(MIX) else MIX
    counts = []
    for item in mix:
        for entry in counts:
            if entry[0] == item:
                entry[1] += 1
                break
        else:
            counts.append([item, 1])
    return counts


if __name__ == '__main__':
    main()
