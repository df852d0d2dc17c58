# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Room for a host's servers elsewhere, read from Placement (advisory: the scheduler decides)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError

# 1.29: allocation candidates with provider summaries, nested providers.
PLACEMENT_MICROVERSION = '1.29'


def capacity(requests, host, subjects, services):
    """The free VCPU / MEMORY_MB / DISK_GB of every other compute, against the servers' needs.
    `services` is the list of compute services (dicts with host, status, state, zone)."""
    needed = {'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}
    largest = {'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}
    for subject in subjects:
        for resource, key in (('VCPU', 'vcpus'), ('MEMORY_MB', 'ram'), ('DISK_GB', 'disk')):
            value = subject.details.get(key) or 0
            needed[resource] += value
            largest[resource] = max(largest[resource], value)
    try:
        providers = requests.json('placement', 'GET', '/resource_providers',
                                  microversion=PLACEMENT_MICROVERSION)['resource_providers']
        query = ','.join('%s:%d' % (k, max(v, 1)) for k, v in sorted(largest.items()))
        candidates = requests.json('placement', 'GET', '/allocation_candidates', params={'resources': query},
                                   microversion=PLACEMENT_MICROVERSION)['provider_summaries']
    except (VmopsError, KeyError) as error:     # advisory: say it could not be read
        return [{'host': None, 'fits': None, 'message': 'Placement could not be read: %s'
                 % getattr(error, 'msg', error)}]
    services = dict((s['host'], s) for s in services)
    zone = (services.get(host) or {}).get('zone')
    rows = []
    for provider in providers:
        name = provider['name']
        if name == host or name not in services:
            continue
        service = services[name]
        summary = candidates.get(provider['uuid'])
        free = {}
        if summary:
            for resource, numbers in summary['resources'].items():
                free[resource] = numbers['capacity'] - numbers['used']
        # The scheduler uses enabled, up hosts; a server usually stays in its availability zone.
        usable = service['status'] == 'enabled' and service['state'] == 'up' and service.get('zone') == zone
        rows.append({'host': name, 'status': service['status'], 'state': service['state'],
                     'zone': service.get('zone'), 'fits_largest': bool(summary), 'free': free,
                     'usable': usable})
    total_free = dict((k, sum(r['free'].get(k, 0) for r in rows if r['usable'] and r['fits_largest']))
                      for k in needed)
    fits = all(total_free[k] >= needed[k] for k in needed) and any(r['usable'] and r['fits_largest'] for r in rows)
    return {'hosts': sorted(rows, key=lambda r: r['host']), 'needed': needed, 'largest': largest,
            'free_on_usable_hosts': total_free, 'fits': fits}


# Placement's mark on the resource providers of a disabled compute service (Nova sets it while the
# service is disabled; the scheduler's pre-filter leaves such providers out).
DISABLED_TRAIT = 'COMPUTE_STATUS_DISABLED'
HYPERVISORS_MICROVERSION = '2.53'   # hypervisor ids are compute node UUIDs = resource provider UUIDs


def readiness(requests, host, service):
    """Can the scheduler place servers on `host` again?  `service` is the host's compute service
    (as services.service_view gives it).  Returns {usable, reasons, providers}; reads only."""
    reasons = []
    if service['status'] != 'enabled':
        reasons.append('the service is %s' % service['status'])
    if service['state'] != 'up':
        reasons.append('the service reports %s' % service['state'])
    if service.get('forced_down'):
        reasons.append('the service is forced down')
    # A compute node's hypervisor name need not be its service's host name: match on the service.
    hypervisors = requests.json('compute', 'GET', '/os-hypervisors/detail',
                                microversion=HYPERVISORS_MICROVERSION).get('hypervisors', [])
    providers = []
    for hypervisor in hypervisors:
        if (hypervisor.get('service') or {}).get('host') != host:
            continue
        traits = requests.json('placement', 'GET', '/resource_providers/%s/traits' % hypervisor['id'],
                               microversion=PLACEMENT_MICROVERSION)['traits']
        disabled = DISABLED_TRAIT in traits
        providers.append({'id': hypervisor['id'], 'name': hypervisor.get('hypervisor_hostname'),
                          'disabled_trait': disabled})
        if disabled:
            reasons.append('Placement still marks provider %s %s'
                           % (hypervisor.get('hypervisor_hostname'), DISABLED_TRAIT))
    if not providers:
        reasons.append('no compute node of %s is known to Nova' % host)
    return {'usable': not reasons, 'reasons': reasons, 'providers': providers}
