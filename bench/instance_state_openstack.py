"""Benchmark: instance_state on the OpenStack sandbox.

For one server on a fake compute and one real guest on the libvirt compute, runs transitions
through the engine in-process with the real OpenStack backend, and reports per transition the
wall seconds (until Nova shows the end state with no task) and the HTTP requests sent
(counted on the SDK's session: authentication, look-up, action, every poll).

Usage (the sandbox must be up: sandbox/openstack/up):
  OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \
  .venv/bin/python bench/instance_state_openstack.py [--cloud vmops-admin] [--rounds 2] [--markdown FILE]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
PROBE = os.path.join(REPO, 'tests', 'integration', 'targets', 'setup_nova_probe', 'files', 'nova_probe.py')
sys.path.insert(0, COLLECTIONS)

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import (  # noqa: E402
    StateRequest, ensure_state)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import (  # noqa: E402
    OpenStackBackend)

FAKE_CIRCUIT = [('running', 'stopped'), ('stopped', 'running'), ('running', 'paused'), ('paused', 'running'),
                ('running', 'suspended'), ('suspended', 'running'), ('running', 'shelved'),
                ('shelved', 'shelved_offloaded'), ('shelved_offloaded', 'running'), ('running', 'rescued'),
                ('rescued', 'running'), ('running', 'rebooted soft'), ('running', 'rebooted hard'),
                ('running', 'paused'), ('paused', 'suspended'), ('suspended', 'stopped'), ('stopped', 'running')]
REAL_CIRCUIT = [('running', 'paused'), ('paused', 'running'), ('running', 'suspended'), ('suspended', 'running'),
                ('running', 'stopped'), ('stopped', 'running')]


def probe(cloud, *args):
    return subprocess.run([sys.executable, PROBE, '--cloud', cloud] + list(args), check=True,
                          capture_output=True, text=True).stdout


def request(name, wanted):
    reboot = None
    if wanted.startswith('rebooted'):
        wanted, reboot = wanted.split()
    return StateRequest(identifier=name, wanted=wanted, hard=False, reboot_type=reboot, shutdown_timeout=None,
                        force_fallback=False, wait=True, timeout=600)


def run_circuit(cloud, name, circuit, rounds):
    rows = {}
    for _ in range(rounds):
        for source, target in circuit:
            # One backend per transition, as one module run has: its requests include authentication.
            started = time.monotonic()
            with OpenStackBackend({'cloud': cloud, 'interface': 'public'}) as backend:
                result = ensure_state(backend, request(name, target))
                requests = backend.request_count()
            seconds = time.monotonic() - started
            assert result['instance']['state_before'] == source, (source, target, result['instance'])
            rows.setdefault((source, target), []).append((seconds, requests, result['instance']['plan']))
    return rows


def table(title, rows):
    lines = ['**%s**' % title, '', '| transition | plan | median s | min s | max s | HTTP requests |',
             '|---|---|---:|---:|---:|---:|']
    for (source, target), samples in rows.items():
        seconds = [sample[0] for sample in samples]
        lines.append('| %s → %s | %s | %.2f | %.2f | %.2f | %d |' % (
            source, target, ' → '.join(samples[0][2]), statistics.median(seconds), min(seconds), max(seconds),
            statistics.median(sample[1] for sample in samples)))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cloud', default='vmops-admin')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--fake-host', default='fake3')
    parser.add_argument('--libvirt-host', default='kvm1')
    parser.add_argument('--markdown')
    args = parser.parse_args()

    fake, real = 'bench-os-fake', 'bench-os-real'
    probe(args.cloud, 'delete', fake, real)
    try:
        probe(args.cloud, 'create', fake, '--host', args.fake_host)
        fake_rows = run_circuit(args.cloud, fake, FAKE_CIRCUIT, args.rounds)
        probe(args.cloud, 'create', real, '--host', args.libvirt_host, '--zone', 'real')
        real_rows = run_circuit(args.cloud, real, REAL_CIRCUIT, args.rounds)
    finally:
        probe(args.cloud, 'delete', fake, real)
    report = '\n\n'.join([table('Nova fake compute (%s)' % args.fake_host, fake_rows),
                          table('Nova libvirt compute (%s), real TCG guest' % args.libvirt_host, real_rows)])
    print(report)
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(report + '\n')


if __name__ == '__main__':
    main()
