"""Benchmark: instance_state on a real libvirt guest.

Measures, on one real TCG guest of the libvirt sandbox:
  1. every transition of the libvirt state graph (the 12 ordered pairs of running, stopped,
     paused, suspended, plus soft/hard reboot and absent): wall seconds of the operation
     including its wait, and the number of libvirt API calls it made (plan + act + wait);
  2. the module's own overhead per call, for a call that has nothing to do:
     in-process engine time, the module run as a process (imports, connect, look-up, close),
     and a whole ansible-playbook task.

Usage (the sandbox must be up: sandbox/libvirt/up):
  .venv/bin/python bench/instance_state_libvirt.py [--uri URI] [--rounds 3] [--markdown FILE]
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
GUESTCTL = os.path.join(REPO, 'sandbox', 'libvirt', 'guestctl.py')
sys.path.insert(0, COLLECTIONS)

import libvirt  # noqa: E402  (after the path set-up, like the collection imports below)

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import (  # noqa: E402
    StateRequest, ensure_state)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import (  # noqa: E402
    LibvirtBackend)

CIRCUIT = [('running', 'stopped'), ('stopped', 'paused'), ('paused', 'suspended'),
           ('suspended', 'running'), ('running', 'paused'), ('paused', 'stopped'),
           ('stopped', 'suspended'), ('suspended', 'paused'), ('paused', 'running'),
           ('running', 'suspended'), ('suspended', 'stopped'), ('stopped', 'running')]


class CallCounter(object):
    """Counts calls into libvirt's connection and domain objects that go to libvirtd."""

    def __init__(self):
        self.counts = collections.Counter()
        self._originals = []

    # Answered by the client library from what it already holds: no round trip to libvirtd.
    CLIENT_SIDE = {'name', 'UUID', 'UUIDString', 'ID', 'connect'}

    def install(self):
        for cls in (libvirt.virConnect, libvirt.virDomain):
            for attr in dir(cls):
                if attr.startswith('_') or attr in self.CLIENT_SIDE or not callable(getattr(cls, attr)):
                    continue
                original = getattr(cls, attr)
                self._originals.append((cls, attr, original))
                setattr(cls, attr, self._wrap(cls.__name__, attr, original))

    def _wrap(self, owner, attr, original):
        counts = self.counts

        def counted(*args, **kwargs):
            counts['%s.%s' % (owner, attr)] += 1
            return original(*args, **kwargs)
        return counted

    def take(self):
        total, detail = sum(self.counts.values()), dict(self.counts)
        self.counts.clear()
        return total, detail


def request(name, wanted, **overrides):
    fields = dict(identifier=name, wanted=wanted, hard=False, reboot_type=None, shutdown_timeout=None,
                  force_fallback=False, wait=True, timeout=180)
    fields.update(overrides)
    return StateRequest(**fields)


def guestctl(*args):
    return subprocess.run([sys.executable, GUESTCTL] + list(args), check=True,
                          capture_output=True, text=True).stdout


def measure_transitions(uri, name, rounds, counter):
    rows = collections.defaultdict(list)
    backend = LibvirtBackend(uri)
    try:
        for _ in range(rounds):
            for source, target in CIRCUIT:
                counter.take()
                started = time.monotonic()
                result = ensure_state(backend, request(name, target))
                seconds = time.monotonic() - started
                calls, _ = counter.take()
                assert result['instance']['state_before'] == source, result
                assert result['instance']['state'] == target, result
                rows[(source, target)].append((seconds, calls, result['instance']['plan']))
                if target == 'running':
                    guestctl('wait-boot', '--uri', uri, name)
            for reboot_type in ('soft', 'hard'):
                counter.take()
                started = time.monotonic()
                result = ensure_state(backend, request(name, 'rebooted', reboot_type=reboot_type))
                rows[('running', 'rebooted ' + reboot_type)].append(
                    (time.monotonic() - started, counter.take()[0], result['instance']['plan']))
                guestctl('wait-boot', '--uri', uri, name)
    finally:
        backend.close()
    return rows


def measure_noop_engine(uri, name, counter, repeats=50):
    backend = LibvirtBackend(uri)
    try:
        times, calls = [], []
        for _ in range(repeats):
            counter.take()
            started = time.monotonic()
            result = ensure_state(backend, request(name, 'running'))
            times.append(time.monotonic() - started)
            calls.append(counter.take()[0])
            assert not result['changed']
    finally:
        backend.close()
    return statistics.median(times), statistics.median(calls)


def measure_noop_module_process(uri, name, repeats=10):
    """The module as Ansible runs it on the managed node: a fresh Python process."""
    module = os.path.join(REPO, 'plugins', 'modules', 'instance_state.py')
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    args = {'ANSIBLE_MODULE_ARGS': {'name': name, 'state': 'running', 'libvirt_uri': uri}}
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump(args, handle)
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        out = subprocess.run([sys.executable, module, handle.name], env=env, check=True,
                             capture_output=True, text=True).stdout
        times.append(time.monotonic() - started)
        assert json.loads(out)['changed'] is False
    os.unlink(handle.name)
    return statistics.median(times)


def measure_noop_playbook_task(uri, name, tasks=20):
    """Per-task cost inside ansible-playbook: a play of `tasks` no-op calls, minus a play of one."""
    def play(count):
        with tempfile.NamedTemporaryFile('w', suffix='.yml', delete=False) as handle:
            handle.write('- hosts: localhost\n  gather_facts: false\n  tasks:\n')
            for number in range(count):
                handle.write('    - name: noop %d\n      vmops.lifecycle.instance_state:\n'
                             '        name: %s\n        state: running\n        libvirt_uri: "%s"\n'
                             % (number, name, uri))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable)
        started = time.monotonic()
        subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                        '-c', 'local', handle.name], env=env, check=True, capture_output=True)
        seconds = time.monotonic() - started
        os.unlink(handle.name)
        return seconds
    one, many = play(1), play(tasks)
    return (many - one) / (tasks - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--uri', default=os.environ.get('VMOPS_LIBVIRT_URI_1'))
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--markdown', help='also write the results as Markdown to this file')
    args = parser.parse_args()
    if not args.uri:
        parser.error('no --uri and no VMOPS_LIBVIRT_URI_1 (source the sandbox hosts.env)')

    name = 'bench-state'
    guestctl('undefine', '--uri', args.uri, name)
    guestctl('define', '--uri', args.uri, name, '--start', '--wait-boot')
    counter = CallCounter()
    counter.install()
    try:
        rows = measure_transitions(args.uri, name, args.rounds, counter)
        engine_noop, engine_calls = measure_noop_engine(args.uri, name, counter)
        process_noop = measure_noop_module_process(args.uri, name)
        task_noop = measure_noop_playbook_task(args.uri, name)
    finally:
        guestctl('undefine', '--uri', args.uri, name)

    lines = ['| transition | plan | median s | min s | max s | libvirt calls |', '|---|---|---:|---:|---:|---:|']
    for (source, target), samples in rows.items():
        seconds = [sample[0] for sample in samples]
        lines.append('| %s → %s | %s | %.3f | %.3f | %.3f | %d |' % (
            source, target, ' → '.join(samples[0][2]), statistics.median(seconds), min(seconds),
            max(seconds), statistics.median(sample[1] for sample in samples)))
    lines += ['', '| module overhead of a call with nothing to do | median |', '|---|---:|',
              '| engine in-process (look-up, read state, plan) | %.1f ms, %d libvirt calls |'
              % (engine_noop * 1000, engine_calls),
              '| module as a process (python start, imports, connect, look-up, close) | %.0f ms |'
              % (process_noop * 1000),
              '| one ansible-playbook task (all of the above plus Ansible) | %.0f ms |' % (task_noop * 1000)]
    report = '\n'.join(lines)
    print(report)
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(report + '\n')


if __name__ == '__main__':
    main()
