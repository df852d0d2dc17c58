# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the compute_hosts inventory knows of each OpenStack compute host.  Reads only.

One pass over the cloud, whatever its size: the compute services, the hypervisors, the aggregates,
the servers (paged) and the server groups, then two Placement reads per compute node (inventories
with their allocation ratios and reservations, and usages).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import RollHost, RollInstance
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import observation_from_server
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.placement import (
    HYPERVISORS_MICROVERSION, PLACEMENT_MICROVERSION)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.services import (
    SERVICES_MICROVERSION, service_view)

SERVERS_MICROVERSION = '2.53'
SERVER_GROUPS_MICROVERSION = '2.64'      # a group has one `policy` (and `rules`)
SERVERS_PAGE = 1000
PLACEMENT_RESOURCES = (('VCPU', 'vcpus'), ('MEMORY_MB', 'ram_mb'), ('DISK_GB', 'disk_gb'))


def service_status(service):
    """One word for a compute service: forced_down, down, disabled or enabled (the first that holds)."""
    if service.get('forced_down'):
        return 'forced_down'
    if service.get('state') != 'up':
        return 'down'
    return 'disabled' if service.get('status') == 'disabled' else 'enabled'


def read_compute_hosts(requests, placement=True):
    """{host: facts} for every nova-compute service of the cloud."""
    return _read(requests, placement)[0]


def rolling_inputs(requests, excluded_statuses=('disabled', 'down', 'forced_down')):
    """The rolling planner's input read from the cloud: ([RollHost], [RollInstance], [excluded host]).
    Excluded: hosts whose service is in `excluded_statuses` (they take nothing)."""
    roll_hosts, instances, statuses = rolling_read(requests)
    excluded = [name for name, status in sorted(statuses.items()) if status in excluded_statuses]
    return roll_hosts, instances, excluded


def rolling_read(requests):
    """The rolling planner's input and each host's service status (as service_status() names it):
    ([RollHost], [RollInstance], {host: status}).

    Sizes are the flavors embedded in the servers (compute microversion >= 2.47); the zone is the
    server's; a host whose Placement could not be read gets no capacity (it takes nothing)."""
    hosts, servers, groups = _read(requests, True)
    group_of = {}
    for group in groups:
        policy = group.get('policy') or (group.get('policies') or [None])[0]
        for member in group.get('members') or []:
            group_of[member] = (group.get('id'), policy)
    roll_hosts = []
    for name, facts in sorted(hosts.items()):
        capacity = facts['capacity'] or {}
        if 'error' in capacity or not capacity:
            roll_hosts.append(RollHost(name, facts['zone'], (0, 0, 0), used=(0, 0, 0)))
            continue
        rows = [capacity.get(key) or {'total': 0, 'reserved': 0, 'allocation_ratio': 1.0, 'used': 0}
                for _resource, key in PLACEMENT_RESOURCES]
        roll_hosts.append(RollHost(name, facts['zone'], tuple(r['total'] for r in rows),
                                   tuple(r['reserved'] for r in rows),
                                   tuple(r['allocation_ratio'] or 1.0 for r in rows), tuple(r['used'] for r in rows)))
    instances = []
    for body in servers:
        flavor = body.get('flavor') or {}
        group, policy = group_of.get(body.get('id'), (None, None))
        size = (flavor.get('vcpus') or 0, flavor.get('ram') or 0,
                (flavor.get('disk') or 0) + (flavor.get('ephemeral') or 0) + -(-(flavor.get('swap') or 0) // 1024))
        instances.append(RollInstance(body.get('id'), body.get('name'), body.get('OS-EXT-SRV-ATTR:host'),
                                      observation_from_server(body).state, size, group, policy,
                                      body.get('OS-EXT-AZ:availability_zone')))
    statuses = dict((name, facts['status']) for name, facts in hosts.items())
    return roll_hosts, instances, statuses


def _read(requests, placement):
    """(hosts, servers, server groups): the compute hosts' facts, and the raw bodies they came from."""
    services = requests.json('compute', 'GET', '/os-services', params={'binary': 'nova-compute'},
                             microversion=SERVICES_MICROVERSION).get('services', [])
    hypervisors = requests.json('compute', 'GET', '/os-hypervisors/detail',
                                microversion=HYPERVISORS_MICROVERSION).get('hypervisors', [])
    aggregates = requests.json('compute', 'GET', '/os-aggregates').get('aggregates', [])
    servers = _all_servers(requests)
    groups = requests.json('compute', 'GET', '/os-server-groups', params={'all_projects': 'True'},
                           microversion=SERVER_GROUPS_MICROVERSION).get('server_groups', [])

    hosts = {}
    for body in services:
        service = service_view(body)
        hosts[service['host']] = {
            'service': service, 'status': service_status(service), 'zone': service.get('zone'),
            'aggregates': [], 'hypervisors': [], 'hypervisor_type': None,
            'instances': {'total': 0, 'by_state': {}}, 'server_groups': [],
            'capacity': None}
    for aggregate in aggregates:
        for name in aggregate.get('hosts') or []:
            if name in hosts:
                hosts[name]['aggregates'].append(aggregate['name'])
    for hypervisor in hypervisors:
        name = (hypervisor.get('service') or {}).get('host')
        if name in hosts:
            hosts[name]['hypervisors'].append({'id': hypervisor.get('id'),
                                               'hostname': hypervisor.get('hypervisor_hostname'),
                                               'state': hypervisor.get('state'),
                                               'type': hypervisor.get('hypervisor_type')})
            hosts[name]['hypervisor_type'] = hypervisor.get('hypervisor_type')
    by_state = collections.defaultdict(collections.Counter)
    server_host = {}
    for body in servers:
        name = body.get('OS-EXT-SRV-ATTR:host')
        server_host[body.get('id')] = name
        if name in hosts:
            by_state[name][observation_from_server(body).state] += 1
    for name, counts in by_state.items():
        hosts[name]['instances'] = {'total': sum(counts.values()), 'by_state': dict(sorted(counts.items()))}
    for group in groups:
        policy = group.get('policy') or (group.get('policies') or [None])[0]
        members = collections.Counter(server_host.get(member) for member in group.get('members') or [])
        for name, count in members.items():
            if name in hosts:
                hosts[name]['server_groups'].append({'id': group.get('id'), 'name': group.get('name'),
                                                     'policy': policy, 'members_here': count})
    if placement:
        for facts in hosts.values():
            facts['capacity'] = _capacity(requests, facts['hypervisors'])
    for facts in hosts.values():
        facts['aggregates'].sort()
        facts['server_groups'].sort(key=lambda g: (g['name'] or '', g['id']))
    return hosts, servers, groups


def _all_servers(requests):
    """Every server of every project, page by page (Nova caps a page at its max_limit)."""
    servers, marker = [], None
    while True:
        params = {'all_tenants': 'True', 'limit': SERVERS_PAGE}
        if marker:
            params['marker'] = marker
        page = requests.json('compute', 'GET', '/servers/detail', params=params,
                             microversion=SERVERS_MICROVERSION).get('servers', [])
        servers.extend(page)
        if not page or len(page) < SERVERS_PAGE:
            return servers
        marker = page[-1]['id']


def _capacity(requests, hypervisors):
    """Placement's view of a host's compute nodes, summed: total, reserved, allocation ratio, used and
    capacity ((total - reserved) * ratio) of vCPU, RAM and disk.  A failed read says so in `error`."""
    result = {}
    try:
        for hypervisor in hypervisors:
            path = '/resource_providers/%s' % hypervisor['id']
            inventories = requests.json('placement', 'GET', path + '/inventories',
                                        microversion=PLACEMENT_MICROVERSION).get('inventories', {})
            usages = requests.json('placement', 'GET', path + '/usages',
                                   microversion=PLACEMENT_MICROVERSION).get('usages', {})
            for resource, key in PLACEMENT_RESOURCES:
                inventory = inventories.get(resource)
                if inventory is None:
                    continue
                row = result.setdefault(key, {'total': 0, 'reserved': 0, 'allocation_ratio': None, 'used': 0,
                                              'capacity': 0, 'free': 0})
                capacity = int((inventory['total'] - inventory['reserved']) * inventory['allocation_ratio'])
                row['total'] += inventory['total']
                row['reserved'] += inventory['reserved']
                row['allocation_ratio'] = inventory['allocation_ratio']
                row['used'] += usages.get(resource, 0)
                row['capacity'] += capacity
                row['free'] = row['capacity'] - row['used']
    except VmopsError as error:
        return {'error': 'Placement could not be read: %s' % error.msg}
    return result
