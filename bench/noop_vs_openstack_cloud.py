"""Benchmark: a no-op over 20 ACTIVE servers, vmops.lifecycle.instance_state against openstack.cloud.

Boots --count servers (vmops-bench-noop-NN, flavor vmops.tiny, image vmops-guest, network private)
on one fake compute (--host fake4: the host no drain or evacuation test empties), waits until all
are ACTIVE, then runs two plays of the same shape, the loop an operator writes over a batch of
servers on localhost:

  ours             vmops.lifecycle.instance_state  name={{ item }} state=running
  openstack.cloud  openstack.cloud.server_action   name={{ item }} action=start

Both are no-ops (every server is ACTIVE already).  --runs runs of each, the order rotating (with
two tools: ours first in odd runs, openstack.cloud first in even ones), after one untimed warm-up
play of each over the first server.  Before each play the bench waits (up to --max-wait) for the
1-minute load average to fall to --max-load: the sandbox machine is shared.  Every play is checked:
each item ok and unchanged, every server still ACTIVE with no task afterwards.

Measured per play:
- wall: the play (first callback event to the stats; this excludes ansible-playbook's own start,
  the same for both) and the whole ansible-playbook process;
- HTTP requests, counted independently of the modules: the plays use a clouds.yaml whose auth_url
  points at a counting reverse proxy on 127.0.0.1, which forwards to the real services and rewrites
  the service URLs in what they answer (version documents, the token's catalog, Location headers)
  to its own listeners, one per service.  So the clients see an ordinary cloud, and every request
  they send, to any service, passes the proxy and is counted by service (compute = nova-api,
  identity = keystone, network, image, volume, placement) with its method and path.
- the load average before and after each play.

openstack.cloud comes from the `ansible` wheel on PyPI (bench/openstack_cloud_collection.py,
cached in .build/bench-collections; ansible-galaxy cannot reach its server here).

Usage (the sandbox must be up: sandbox/openstack/up; collection linked: . scripts/lib.sh && link_collection):
  OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \\
  .venv/bin/python bench/noop_vs_openstack_cloud.py [--runs 3] [--count 20] [--host fake4]
      [--cloud vmops-admin] [--ref REV]... [--max-load 1.5] [--max-wait 300] [--markdown FILE] [--keep-logs DIR]

--ref REV measures the collection as committed in REV (git archive into a temporary collections
path) instead of the working tree behind .build/collections.  Given more than once, each revision
is a tool of its own in the same run (before and after a change, under the same load).
"""

import argparse
import copy
import datetime
import http.client
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openstack  # noqa: E402

import openstack_cloud_collection  # noqa: E402

DEFAULT_CLOUDS_YAML = '/var/tmp/vmops-sandbox/openstack/clouds.yaml'
PREFIX = 'vmops-bench-noop-'
BENCH_CLOUD = 'vmops-bench-noop'
MICROVERSION = '2.73'
OC = 'openstack.cloud'
UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b')


# The counting reverse proxy -----------------------------------------------------------------------------

class CountingProxy(object):
    """One listener on 127.0.0.1 per upstream origin (scheme://host:port).  Requests are forwarded
    unchanged (but for Host and Accept-Encoding: answers come uncompressed, so they can be rewritten);
    every upstream origin in an answer's body or Location header is replaced by its listener's origin."""

    HOP_BY_HOP = ('connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailers',
                  'transfer-encoding', 'upgrade', 'content-length', 'content-encoding')

    def __init__(self, upstreams):
        """upstreams: {origin: service label}."""
        self.lock = threading.Lock()
        self.records = []
        self.listeners = {}     # upstream origin -> (server, proxy origin, label)
        for origin, label in upstreams.items():
            server = ThreadingHTTPServer(('127.0.0.1', 0), self._handler(origin, label))
            server.daemon_threads = True
            self.listeners[origin] = (server, 'http://127.0.0.1:%d' % server.server_address[1], label)
        self.pattern = re.compile('(%s)(?![0-9])' % '|'.join(re.escape(o) for o in sorted(upstreams, key=len,
                                                                                         reverse=True)))
        self.mapping = dict((origin, entry[1]) for origin, entry in self.listeners.items())
        self.threads = []

    def start(self):
        for server, _, _ in self.listeners.values():
            thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.2}, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self):
        for server, _, _ in self.listeners.values():
            server.shutdown()
            server.server_close()

    def proxied(self, url):
        return self.pattern.sub(lambda m: self.mapping[m.group(1)], url)

    def rewrite(self, data):
        return self.pattern.sub(lambda m: self.mapping[m.group(1)], data.decode('utf-8')).encode('utf-8')

    def take(self):
        """The requests recorded since the last take()."""
        with self.lock:
            records, self.records = self.records, []
        return records

    def _handler(self, origin, label):
        proxy = self
        parsed = urllib.parse.urlsplit(origin)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def forward(self):
                started = time.monotonic()
                length = int(self.headers.get('Content-Length') or 0)
                if self.headers.get('Transfer-Encoding'):
                    self.send_error(501, 'chunked request bodies are not supported by the bench proxy')
                    return
                body = self.rfile.read(length) if length else None
                headers = dict((k, v) for k, v in self.headers.items()
                               if k.lower() not in self.HOP and k.lower() != 'accept-encoding')
                headers['Host'] = parsed.netloc
                upstream = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                if data and self.command != 'HEAD':
                    data = proxy.rewrite(data)
                self.send_response(response.status, response.reason)
                close = False
                for key, value in response.getheaders():
                    lower = key.lower()
                    if lower == 'connection' and value.lower() == 'close':
                        close = True
                    if lower in proxy.HOP_BY_HOP:
                        continue
                    if lower == 'location':
                        value = proxy.proxied(value)
                    self.send_header(key, value)
                if self.command == 'HEAD':
                    self.send_header('Content-Length', response.getheader('Content-Length') or '0')
                elif response.status not in (204, 304):
                    self.send_header('Content-Length', str(len(data)))
                if close:
                    self.send_header('Connection', 'close')
                    self.close_connection = True
                self.end_headers()
                if data and self.command != 'HEAD' and response.status not in (204, 304):
                    self.wfile.write(data)
                path, _, query = self.path.partition('?')
                with proxy.lock:
                    proxy.records.append({'service': label, 'method': self.command, 'path': path, 'query': query,
                                          'status': response.status, 'seconds': time.monotonic() - started})

            HOP = ('connection', 'keep-alive', 'proxy-authorization', 'te', 'trailers', 'transfer-encoding',
                   'upgrade', 'host')
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = forward

        return Handler


def upstreams_of(conn, auth_url):
    """{origin: label} for the identity endpoint and every service in the token's catalog."""
    labels = {}

    def add(url, label):
        parts = urllib.parse.urlsplit(url)
        origin = '%s://%s' % (parts.scheme, parts.netloc)
        if label not in labels.setdefault(origin, []):
            labels[origin].append(label)
    add(auth_url, 'identity')
    access = conn.session.auth.get_access(conn.session)
    for service in access.service_catalog.catalog:
        label = {'volumev3': 'volume', 'block-storage': 'volume'}.get(service['type'], service['type'])
        for endpoint in service['endpoints']:
            add(endpoint['url'], label)
    return dict((origin, '+'.join(names)) for origin, names in labels.items())


# The plays ------------------------------------------------------------------------------------------------

CALLBACK = '''
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Writes the play's timings and each loop item's outcome to $VMOPS_BENCH_RECORD."""
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'vmops_bench_record'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.data = {'items': [], 'failures': []}

    def v2_playbook_on_play_start(self, play):
        self.data['play_start'] = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.data['task_start'] = time.monotonic()

    def _item(self, result, failed):
        r = result._result
        self.data['items'].append({'item': r.get('item'), 'changed': r.get('changed'), 'failed': failed,
                                   'msg': r.get('msg'), 'at': time.monotonic(),
                                   'api_requests': (r.get('instance') or {}).get('api_requests')})

    def v2_runner_item_on_ok(self, result):
        self._item(result, False)

    def v2_runner_item_on_failed(self, result):
        self._item(result, True)

    def v2_runner_on_ok(self, result):
        self.data['task_end'] = time.monotonic()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.data['task_end'] = time.monotonic()
        self.data['failures'].append(result._result.get('msg'))

    def v2_runner_on_unreachable(self, result):
        self.data['failures'].append(result._result.get('msg'))

    def v2_playbook_on_stats(self, stats):
        self.data['play_end'] = time.monotonic()
        with open(os.environ['VMOPS_BENCH_RECORD'], 'w') as handle:
            json.dump(self.data, handle)
'''

PLAYS = {
    'ours': '''
- name: Every server of the batch running (vmops.lifecycle)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ensure the server is running
      vmops.lifecycle.instance_state:
        cloud: {cloud}
        name: "{{{{ item }}}}"
        state: running
      loop: "{{{{ servers }}}}"
''',
    'openstack.cloud': '''
- name: Every server of the batch running (openstack.cloud)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the server
      openstack.cloud.server_action:
        cloud: {cloud}
        name: "{{{{ item }}}}"
        action: start
      loop: "{{{{ servers }}}}"
''',
}


class Plays(object):
    """The playbooks, inventory, callback and clouds.yaml of the bench, in a private directory."""

    def __init__(self, workdir, cloud_entry, proxy, logs=None):
        self.workdir = workdir
        self.logs = logs
        entry = copy.deepcopy(cloud_entry)
        entry['auth']['auth_url'] = proxy.proxied(entry['auth']['auth_url'])
        self.clouds_yaml = os.path.join(workdir, 'clouds.yaml')
        fd = os.open(self.clouds_yaml, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            yaml.safe_dump({'clouds': {BENCH_CLOUD: entry}}, handle)
        os.makedirs(os.path.join(workdir, 'callbacks'))
        with open(os.path.join(workdir, 'callbacks', 'vmops_bench_record.py'), 'w') as handle:
            handle.write(CALLBACK)
        with open(os.path.join(workdir, 'inventory'), 'w') as handle:
            handle.write('localhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
        for kind, text in PLAYS.items():
            with open(self._playbook(kind), 'w') as handle:
                handle.write(text.format(cloud=BENCH_CLOUD))
        self.count = 0

    def _playbook(self, kind):
        return os.path.join(self.workdir, 'play-%s.yml' % kind.replace('.', '-'))

    def run(self, variant, servers):
        """variant: {'label', 'kind' (a key of PLAYS), 'collections' (ANSIBLE_COLLECTIONS_PATH)}."""
        tool = variant['label']
        self.count += 1
        record = os.path.join(self.workdir, 'record-%d.json' % self.count)
        variables = os.path.join(self.workdir, 'vars-%d.json' % self.count)
        with open(variables, 'w') as handle:
            json.dump({'servers': servers}, handle)
        env = dict((k, v) for k, v in os.environ.items() if not k.startswith('OS_') and not k.startswith('ANSIBLE_'))
        env.update({
            'PATH': os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', ''),
            'OS_CLIENT_CONFIG_FILE': self.clouds_yaml,
            'ANSIBLE_COLLECTIONS_PATH': variant['collections'],
            'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
            'ANSIBLE_CALLBACK_PLUGINS': os.path.join(self.workdir, 'callbacks'),
            'ANSIBLE_CALLBACKS_ENABLED': 'vmops_bench_record',
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_RETRY_FILES_ENABLED': '0',
            'ANSIBLE_LOCALHOST_WARNING': '0',
            'VMOPS_BENCH_RECORD': record,
        })
        command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i',
                   os.path.join(self.workdir, 'inventory'), '-e', '@' + variables, self._playbook(variant['kind'])]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        process_seconds = time.monotonic() - started
        load_after = os.getloadavg()[0]
        if self.logs:
            with open(os.path.join(self.logs, 'play-%02d-%s.log' % (self.count, re.sub('[^a-z0-9.]+', '-', tool))),
                      'w') as handle:
                handle.write(done.stdout)
        try:
            with open(record) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            data = None
        problems = []
        if done.returncode != 0 or data is None:
            problems.append('ansible-playbook exited %d' % done.returncode)
        else:
            problems += ['task failed: %s' % msg for msg in data['failures']]
            items = dict((entry['item'], entry) for entry in data['items'])
            for name in servers:
                entry = items.get(name)
                if entry is None:
                    problems.append('%s: no result' % name)
                elif entry['failed'] or entry['changed']:
                    problems.append('%s: %s' % (name, 'failed: %s' % entry['msg'] if entry['failed'] else 'changed'))
        if problems:
            raise RuntimeError('%s play: %s\n%s' % (tool, '; '.join(problems[:5]), done.stdout[-3000:]))
        return {'tool': tool, 'play_seconds': data['play_end'] - data['play_start'],
                'process_seconds': process_seconds, 'load': (load_before, load_after),
                'api_requests': [entry['api_requests'] for entry in data['items']]}


# Servers (plain SDK, direct to the services: not counted) -----------------------------------------------

class Cloud(object):
    def __init__(self, cloud):
        self.conn = openstack.connect(cloud=cloud)

    def call(self, method, url, **kwargs):
        response = self.conn.compute.request(url, method, microversion=MICROVERSION, **kwargs)
        openstack.exceptions.raise_from_response(response)
        return response

    def ours(self):
        return self.call('GET', '/servers/detail', params={'name': '^%s' % PREFIX}).json()['servers']

    def project_servers(self):
        return len(self.call('GET', '/servers').json()['servers'])

    def create(self, count, host):
        image = self.conn.image.find_image('vmops-guest', ignore_missing=False)
        network = self.conn.network.find_network('private', ignore_missing=False)
        names = []
        for index in range(count):
            body = {'name': '%s%02d' % (PREFIX, index), 'imageRef': image.id, 'flavorRef': 'vmops.tiny',
                    'networks': [{'uuid': network.id}]}
            if host:
                body['availability_zone'] = 'nova:%s' % host
            self.call('POST', '/servers', json={'server': body})
            names.append(body['name'])
        self.wait_active(names, 'boot')
        return names

    def wait_active(self, names, what, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            bodies = dict((b['name'], b) for b in self.ours())
            errors = [n for n in names if n in bodies and bodies[n]['status'] == 'ERROR']
            if errors:
                raise RuntimeError('%s: %s went to ERROR: %s' % (what, errors[0], bodies[errors[0]].get('fault')))
            pending = [n for n in names if n not in bodies or bodies[n]['status'] != 'ACTIVE'
                       or bodies[n].get('OS-EXT-STS:task_state')]
            if not pending:
                return bodies
            if time.monotonic() > deadline:
                raise RuntimeError('%s: still waiting for %s' % (what, pending))
            time.sleep(1)

    def delete_all(self, timeout=300):
        for body in self.ours():
            try:
                self.call('DELETE', '/servers/%s' % body['id'])
            except openstack.exceptions.NotFoundException:
                pass
        deadline = time.monotonic() + timeout
        while self.ours():
            if time.monotonic() > deadline:
                raise RuntimeError('servers %s* not deleted after %d s' % (PREFIX, timeout))
            time.sleep(1)


# Collection under test ------------------------------------------------------------------------------------

def collection_tree(ref, workdir):
    """(collections path, description) of the vmops.lifecycle to measure."""
    head = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                          text=True).stdout.strip()
    if ref:
        commit = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', ref], check=True, capture_output=True,
                                text=True).stdout.strip()
        root = os.path.join(workdir, 'collections-%s' % commit)
        dest = os.path.join(root, 'ansible_collections', 'vmops', 'lifecycle')
        os.makedirs(dest)
        archive = subprocess.run(['git', '-C', REPO, 'archive', '--format=tar', commit, 'plugins', 'meta',
                                  'galaxy.yml'], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest)
        return root, commit
    collections = os.path.join(REPO, '.build', 'collections')
    link = os.path.join(collections, 'ansible_collections', 'vmops', 'lifecycle')
    if not os.path.exists(link):     # what scripts/lib.sh link_collection does
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    changed = subprocess.run(['git', '-C', REPO, 'status', '--porcelain', '--', 'plugins', 'meta'],
                             capture_output=True, text=True).stdout.splitlines()
    return collections, 'working tree at %s%s' % (head, ' (%d files under plugins/ or meta/ not committed)'
                                                  % len(changed) if changed else '')


# Report ---------------------------------------------------------------------------------------------------

def shape(record, names):
    """'GET /v2.1/servers/{id}': ids and the server's name replaced, query keys kept."""
    def anonymous(text):
        for name in sorted(names, key=len, reverse=True):
            if name in text:
                text = text.replace(name, '{name}')
                break
        return UUID_RE.sub('{id}', text)
    query = ['%s=%s' % (key, anonymous(value))
             for key, value in urllib.parse.parse_qsl(record['query'], keep_blank_values=True)]
    return '%s %s%s' % (record['method'], anonymous(record['path']), ('?' + '&'.join(query)) if query else '')


def summarise(result, records, names):
    by_service, busy = {}, {}
    for record in records:
        by_service[record['service']] = by_service.get(record['service'], 0) + 1
        busy[record['service']] = busy.get(record['service'], 0.0) + record['seconds']
    result['requests'] = by_service
    result['request_seconds'] = busy
    result['shapes'] = {}
    for record in records:
        key = (record['service'], shape(record, names), record['status'])
        entry = result['shapes'].setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += record['seconds']
    return result


def report(results, args, meta):
    count = float(args.count)
    labels = meta['labels']
    services = sorted(set(s for r in results for s in r['requests']),
                      key=lambda s: (s != 'compute', s != 'identity', s))
    lines = ['No-op over %d ACTIVE servers on %s: vmops.lifecycle.instance_state state=running (%s) against '
             'openstack.cloud %s server_action action=start, a loop in one play each; %d runs of each, the order '
             'rotating. %s. Servers in the project during the plays: %s.' % (
                 args.count, args.host or 'the scheduler\'s choice', '; '.join(meta['described']),
                 openstack_cloud_collection.COLLECTION_VERSION, args.runs, meta['date'], meta['project_servers']), '',
             '| run | tool | play s | ansible-playbook s | %s | load avg before / after |' % ' | '.join(
                 '%s requests' % s for s in services),
             '|---:|---|---:|---:|%s---|' % ('---:|' * len(services))]
    for r in results:
        lines.append('| %d | %s | %.2f | %.2f | %s | %.2f / %.2f |' % (
            r['run'], r['tool'], r['play_seconds'], r['process_seconds'],
            ' | '.join(str(r['requests'].get(s, 0)) for s in services), r['load'][0], r['load'][1]))
    by_tool = dict((label, [r for r in results if r['tool'] == label]) for label in labels)
    lines += ['', '| tool | play s mean | median | min | s per server (mean) | ansible-playbook s mean | %s |' % (
        ' | '.join('%s requests per server' % s for s in services)), '|---|---:|---:|---:|---:|---:|%s' % (
        '---:|' * len(services))]
    for label in labels:
        runs = by_tool[label]
        lines.append('| %s | %.2f | %.2f | %.2f | %.3f | %.2f | %s |' % (
            label, statistics.mean(r['play_seconds'] for r in runs), statistics.median(r['play_seconds'] for r in runs),
            min(r['play_seconds'] for r in runs),
            statistics.mean(r['play_seconds'] for r in runs) / count,
            statistics.mean(r['process_seconds'] for r in runs),
            ' | '.join('%.2f' % (statistics.mean(r['requests'].get(s, 0) for r in runs) / count) for s in services)))
    lines += ['', '| tool | %s | all requests |' % ' | '.join('%s ms per server' % s for s in services),
              '|---|%s---:|' % ('---:|' * len(services))]
    for label in labels:
        runs = by_tool[label]
        lines.append('| %s | %s | %.0f |' % (label, ' | '.join(
            '%.0f' % (1000 * statistics.mean(r['request_seconds'].get(s, 0.0) for r in runs) / count)
            for s in services), 1000 * statistics.mean(sum(r['request_seconds'].values()) for r in runs) / count))
    theirs = by_tool[OC]
    lines.append('')
    for label in labels:
        if label == OC:
            continue
        ours = by_tool[label]

        def ratio(key, reduce):
            return reduce(r[key] for r in ours) / reduce(r[key] for r in theirs)
        lines.append('%s / openstack.cloud: play wall %.2f× (means), %.2f× (medians), %.2f× (minimums); '
                     'ansible-playbook wall %.2f× (means).' % (
                         label, ratio('play_seconds', statistics.mean), ratio('play_seconds', statistics.median),
                         ratio('play_seconds', min), ratio('process_seconds', statistics.mean)))
        reported = [sum(n for n in r['api_requests'] if n is not None) for r in ours]
        lines.append('%s: instance_state\'s own api_requests, summed over each play: %s (the proxy counted %s).' % (
            label, ', '.join(map(str, reported)), ', '.join(str(sum(r['requests'].values())) for r in ours)))
    lines += ['', '| tool | service | request | status | per server | mean ms |', '|---|---|---|---|---:|---:|']
    for label in labels:
        shapes = {}
        for r in by_tool[label]:
            for key, (n, seconds) in r['shapes'].items():
                entry = shapes.setdefault(key, [0, 0.0])
                entry[0] += n
                entry[1] += seconds
        for (service, text, status), (n, seconds) in sorted(shapes.items(), key=lambda kv: (
                kv[0][0] != 'compute', kv[0][0] != 'identity', kv[0][0], -kv[1][0], kv[0][1])):
            lines.append('| %s | %s | `%s` | %d | %.2f | %.0f |' % (
                label, service, text, status, n / (count * len(by_tool[label])), 1000 * seconds / n))
    lines += ['', 'Proxy overhead (GET of the compute API root, direct against proxied, median of %d): %.1f ms '
              'direct, %.1f ms through the proxy.' % meta['proxy_overhead']]
    return '\n'.join(lines)


def proxy_overhead(compute_origin, proxy_origin, samples=30):
    def timed(origin):
        parts = urllib.parse.urlsplit(origin)
        seconds = []
        for _ in range(samples):
            started = time.monotonic()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            connection.request('GET', '/')
            connection.getresponse().read()
            connection.close()
            seconds.append(time.monotonic() - started)
        return statistics.median(seconds) * 1000
    return samples, timed(compute_origin), timed(proxy_origin)


def wait_for_load(max_load, max_wait):
    """Others share this machine: start a play when the load is low, or after max_wait anyway."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        print('load average %.2f > %.2f: waiting' % (os.getloadavg()[0], max_load), file=sys.stderr)
        time.sleep(10)


# Main -----------------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cloud', default='vmops-admin')
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--host', default='fake4', help='compute host to boot on (admin only; "" lets the '
                        'scheduler choose)')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--ref', action='append', help='measure vmops.lifecycle as committed in this git revision '
                        '(repeat it to measure several revisions in the same run, interleaved)')
    parser.add_argument('--max-load', type=float, default=1.5,
                        help='before each play, wait until the 1-minute load average is at most this')
    parser.add_argument('--max-wait', type=float, default=300, help='seconds to wait for --max-load at most '
                        '(then the play runs anyway; the load is reported)')
    parser.add_argument('--markdown')
    parser.add_argument('--keep-logs', help='directory for each play\'s ansible-playbook output')
    args = parser.parse_args()

    os.environ.setdefault('OS_CLIENT_CONFIG_FILE', DEFAULT_CLOUDS_YAML)
    with open(os.environ['OS_CLIENT_CONFIG_FILE']) as handle:
        cloud_entry = yaml.safe_load(handle)['clouds'][args.cloud]
    if args.keep_logs:
        os.makedirs(args.keep_logs, exist_ok=True)

    # A TERM (or HUP) ends the run through the finally clauses: the servers are deleted.
    def terminated(signum, frame):
        raise SystemExit('terminated by signal %d' % signum)
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)

    oc_path = openstack_cloud_collection.ensure()
    workdir = tempfile.mkdtemp(prefix='vmops-bench-noop-')
    cloud = Cloud(args.cloud)
    proxy = None
    results = []
    try:
        variants, described = [], []
        for ref in args.ref or [None]:
            vmops_path, what = collection_tree(ref, workdir)
            label = 'ours' if not args.ref or len(args.ref) == 1 else 'ours @ %s' % what
            variants.append({'label': label, 'kind': 'ours', 'collections': vmops_path})
            described.append('%s: vmops.lifecycle %s' % (label, 'commit ' + what if ref else what))
        variants.append({'label': OC, 'kind': OC, 'collections': oc_path})
        proxy = CountingProxy(upstreams_of(cloud.conn, cloud_entry['auth']['auth_url'])).start()
        compute = [o for o, (_, _, label) in proxy.listeners.items() if 'compute' in label.split('+')][0]
        meta = {'labels': [v['label'] for v in variants], 'described': described,
                'proxy_overhead': proxy_overhead(compute, proxy.mapping[compute]),
                'date': datetime.date.today().isoformat()}
        plays = Plays(workdir, cloud_entry, proxy, args.keep_logs)

        cloud.delete_all()
        started = time.monotonic()
        names = cloud.create(args.count, args.host)
        print('%d servers ACTIVE on %s in %.1f s' % (len(names), args.host or 'fake hosts', time.monotonic() - started),
              file=sys.stderr)
        project = []
        for variant in variants:    # warm-up (not reported): caches, compiled bytecode, a check of the setup
            plays.run(variant, names[:1])
            proxy.take()
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(variants)      # the order rotates: each tool leads in turn
            for variant in variants[shift:] + variants[:shift]:
                wait_for_load(args.max_load, args.max_wait)
                project.append(cloud.project_servers())
                proxy.take()
                result = plays.run(variant, names)
                result['run'] = run
                results.append(summarise(result, proxy.take(), names))
                cloud.wait_active(names, 'after the %s play' % variant['label'], timeout=5)
                print('run %d %s: play %.2f s, process %.2f s, requests %s, load %.2f/%.2f' % (
                    run, variant['label'], result['play_seconds'], result['process_seconds'],
                    json.dumps(result['requests'], sort_keys=True), result['load'][0], result['load'][1]),
                    file=sys.stderr)
        meta['project_servers'] = '%d–%d' % (min(project), max(project)) if min(project) != max(project) \
            else str(project[0])
    finally:
        try:
            cloud.delete_all()
        finally:
            if proxy is not None:
                proxy.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args, meta)
    print(text)
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(text + '\n')


if __name__ == '__main__':
    main()
