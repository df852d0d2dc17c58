#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the cloud and the libvirt hosts say, read with plain openstacksdk and virsh (never the plugin).

Prints JSON: {"openstack": {host: {status, state, forced_down, disabled_reason, zone, servers,
hypervisor_type, vcpus_used, vcpus_capacity}}, "libvirt": {hostname: {domains, cpus}}}.
"""

import argparse
import json
import subprocess

import openstack


def openstack_truth(cloud):
    conn = openstack.connect(cloud=cloud)
    hosts = {}
    for service in conn.compute.services(binary='nova-compute'):
        hosts[service.host] = {'status': service.status, 'state': service.state,
                               'forced_down': bool(service.is_forced_down),
                               'disabled_reason': service.disabled_reason, 'zone': service.availability_zone,
                               'servers': 0}
    for server in conn.compute.servers(all_projects=True):
        if server.compute_host in hosts:
            hosts[server.compute_host]['servers'] += 1
    for hypervisor in conn.compute.hypervisors(details=True):
        name = (hypervisor.service_details or {}).get('host')
        if name not in hosts:
            continue
        hosts[name]['hypervisor_type'] = hypervisor.hypervisor_type
        usages = conn.placement.get('/resource_providers/%s/usages' % hypervisor.id,
                                    microversion='1.29').json()['usages']
        inventory = conn.placement.get('/resource_providers/%s/inventories/VCPU' % hypervisor.id,
                                       microversion='1.29').json()
        hosts[name]['vcpus_used'] = usages.get('VCPU', 0)
        hosts[name]['vcpus_capacity'] = int((inventory['total'] - inventory['reserved'])
                                            * inventory['allocation_ratio'])
    return hosts


def virsh(uri, *args):
    return subprocess.run(['virsh', '-c', uri] + list(args), check=True, capture_output=True, text=True).stdout


def libvirt_truth(uris):
    hosts = {}
    for uri in uris:
        name = virsh(uri, 'hostname').strip()
        domains = [line for line in virsh(uri, 'list', '--all', '--name').splitlines() if line.strip()]
        cpus = [line.split(':')[1].strip() for line in virsh(uri, 'nodeinfo').splitlines()
                if line.startswith('CPU(s):')][0]
        hosts[name] = {'domains': len(domains), 'cpus': int(cpus)}
    return hosts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    parser.add_argument('--uri', action='append', default=[])
    args = parser.parse_args()
    print(json.dumps({'openstack': openstack_truth(args.cloud), 'libvirt': libvirt_truth(args.uri)}))


if __name__ == '__main__':
    main()
