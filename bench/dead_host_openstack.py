"""Benchmark: a dead compute host with 10 servers on the OpenStack sandbox, evacuated.

Measures the time from forcing the host's service down until every server is ACTIVE on another host,
as seen by an independent poller (its own connection, a list GET every 0.1 s), for:

  ours    vmops.lifecycle.host_evacuate's core, in-process (module_utils/moves.run with the OpenStack
          MoveBackend, mode evacuate, fenced + force_down: the run itself forces the service down)
  burst   plain openstacksdk: force the service down, send every evacuation at once, one shared
          list poll every 0.25 s until all are ACTIVE elsewhere (the lower bound)

Between runs the host is given back as the sandbox README says: its nova-compute restarted
(sandbox/openstack/up --restart nova-compute-HOST, which clears the finished evacuations), the
service un-forced (retried until Nova accepts it) and enabled.

Usage (the sandbox must be up; collection linked: . scripts/lib.sh && link_collection):
  OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \\
  .venv/bin/python bench/dead_host_openstack.py [--host fake2] [--count 10] [--only ours] [--markdown FILE]
"""

import argparse
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))
sys.path.insert(0, os.path.join(REPO, '.build', 'collections'))

import drain_openstack as common  # noqa: E402  (connection, counting, setup helpers)

PREFIX = 'vmops-bench-dead-'


class Api(common.Counted):
    def servers(self):
        return self.call('GET', '/servers/detail', params={'name': '^%s' % PREFIX}).json()['servers']

    def service(self, host):
        services = self.call('GET', '/os-services', params={'host': host, 'binary': 'nova-compute'},
                             microversion=None).json()['services']
        return services[0]

    def call(self, method, url, microversion=common.MICROVERSION, **kwargs):
        response = self.conn.compute.request(url, method, microversion=microversion or '2.53', **kwargs)
        common.openstack.exceptions.raise_from_response(response)
        return response

    def set_service(self, service_id, body):
        return self.call('PUT', '/os-services/%s' % service_id, json=body, microversion='2.53').json()['service']


class AllActive(threading.Thread):
    """Independent observer: when each server is first seen ACTIVE (no task) on another host."""

    def __init__(self, cloud, ids, source):
        super(AllActive, self).__init__(daemon=True)
        self.api = Api(cloud)
        self.ids = set(ids)
        self.source = source
        self.seen = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and len(self.seen) < len(self.ids):
            now = time.time()
            try:
                bodies = self.api.servers()
            except Exception:  # transient: look again
                continue
            for body in bodies:
                if body['id'] in self.ids and body['id'] not in self.seen and body['status'] == 'ACTIVE' \
                        and body.get('OS-EXT-STS:task_state') is None and common.host_of(body) != self.source:
                    self.seen[body['id']] = now
            time.sleep(0.1)
        self.api.close()


def create(cloud, host, count):
    common.wait_quiet(cloud, host, PREFIX)
    api = Api(cloud)
    image = api.conn.image.find_image('vmops-guest', ignore_missing=False)
    network = api.conn.network.find_network('private', ignore_missing=False)
    ids = []
    for index in range(count):
        body = {'name': '%s%02d' % (PREFIX, index), 'imageRef': image.id, 'flavorRef': 'vmops.tiny',
                'networks': [{'uuid': network.id}], 'availability_zone': 'nova:%s' % host}
        ids.append(api.call('POST', '/servers', json={'server': body}).json()['server']['id'])
    deadline = time.monotonic() + 600
    while True:
        bodies = api.servers()
        for body in bodies:
            common.check_error(body)
        if len(bodies) == count and all(b['status'] == 'ACTIVE' and b.get('OS-EXT-STS:task_state') is None
                                        for b in bodies):
            break
        if time.monotonic() > deadline:
            raise RuntimeError('boot timed out')
        time.sleep(1)
    api.close()
    return ids


def delete_all(cloud):
    api = Api(cloud)
    for body in api.servers():
        api.call('DELETE', '/servers/%s' % body['id'])
    deadline = time.monotonic() + 300
    while api.servers() and time.monotonic() < deadline:
        time.sleep(1)
    api.close()


def give_back(cloud, host):
    """Restart the host's nova-compute, then un-force (Nova refuses until the restart cleaned up) and enable."""
    subprocess.run([os.path.join(REPO, 'sandbox', 'openstack', 'up'), '--restart', 'nova-compute-%s' % host],
                   check=True, stdout=subprocess.DEVNULL)
    api = Api(cloud)
    service = api.service(host)
    deadline = time.monotonic() + 180
    while True:
        try:
            api.set_service(service['id'], {'forced_down': False, 'status': 'enabled'})
            break
        except common.openstack.exceptions.HttpException:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    while api.service(host)['state'] != 'up' and time.monotonic() < deadline:
        time.sleep(2)
    api.close()


def ours(cloud, host, ids):
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.moves import OpenStackMoves
    watcher = AllActive(cloud, ids, host)
    with OpenStackMoves({'cloud': cloud, 'interface': 'public'}) as backend:
        watcher.start()
        forced_at = time.time()     # the run's first change is forcing the service down
        result = moves.run(backend, moves.MoveRequest(host=host, mode='evacuate', fenced=True, force_down=True,
                                                      disabled_reason='vmops bench dead host'))
        returned = time.time()
        requests = backend.request_count()
    watcher.join(60)
    watcher.stop.set()
    failed = [s for s in result['servers'] if s['outcome'] != 'moved']
    if failed:
        raise RuntimeError('ours: not evacuated: %s' % failed)
    return {'all_active': max(watcher.seen.values()) - forced_at if len(watcher.seen) == len(ids) else None,
            'returned': returned - forced_at, 'requests': requests, 'seen': len(watcher.seen),
            'window': result['totals'].get('window')}


def burst(cloud, host, ids):
    watcher = AllActive(cloud, ids, host)
    api = Api(cloud)
    service = api.service(host)
    watcher.start()
    forced_at = time.time()
    api.set_service(service['id'], {'forced_down': True})
    api.set_service(service['id'], {'status': 'disabled', 'disabled_reason': 'vmops bench dead host'})
    for server_id in ids:
        api.call('POST', '/servers/%s/action' % server_id, json={'evacuate': {}})
    pending = set(ids)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        time.sleep(0.25)
        for body in api.servers():
            common.check_error(body)
            if body['id'] in pending and body['status'] == 'ACTIVE' and body.get('OS-EXT-STS:task_state') is None \
                    and common.host_of(body) != host:
                pending.discard(body['id'])
    returned = time.time()
    requests = api.count
    api.close()
    watcher.join(60)
    watcher.stop.set()
    return {'all_active': max(watcher.seen.values()) - forced_at if len(watcher.seen) == len(ids) else None,
            'returned': returned - forced_at, 'requests': requests, 'seen': len(watcher.seen), 'window': 'all'}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cloud', default='vmops-admin')
    parser.add_argument('--host', default='fake2')
    parser.add_argument('--count', type=int, default=10)
    parser.add_argument('--only', action='append', choices=['ours', 'burst'])
    parser.add_argument('--markdown')
    args = parser.parse_args()
    if args.host not in ('fake1', 'fake2', 'fake3'):
        sys.exit('force down only fake1, fake2 or fake3 (the hosts the contracts allow)')
    results = {}
    delete_all(args.cloud)
    try:
        for name in args.only or ['ours', 'burst']:
            ids = create(args.cloud, args.host, args.count)
            try:
                results[name] = globals()[name](args.cloud, args.host, ids)
            finally:
                give_back(args.cloud, args.host)
                delete_all(args.cloud)
            print('%s: %s' % (name, results[name]), file=sys.stderr)
    finally:
        delete_all(args.cloud)
    lines = ['Dead host %s with %d running servers: forced down, evacuated (OpenStack sandbox)' % (args.host, args.count),
             '', '| approach | forced down → all ACTIVE elsewhere (s) | until the call returned (s) | HTTP requests | window |',
             '|---|---:|---:|---:|---|']
    for name, r in results.items():
        lines.append('| %s | %s | %.1f | %d | %s |' % (
            name, '%.1f' % r['all_active'] if r['all_active'] is not None else 'not all seen (%d)' % r['seen'],
            r['returned'], r['requests'], r['window']))
    print('\n'.join(lines))
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
