# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a compute host usable by the scheduler again?  Reads, never changes anything.

Reads the connection options (as the collection's modules take them: cloud, auth, region_name,
interface ...) and the host name as JSON on stdin, prints JSON on stdout:
  {"host", "usable", "reasons": [...], "service": {...}, "providers": [{"id", "name", "traits_disabled"}]}

Usable means: the nova-compute service is enabled and up and not forced down, and every resource
provider of the host's compute nodes is free of the COMPUTE_STATUS_DISABLED trait, which Nova sets
in Placement while the service is disabled and which the scheduler's pre-filter excludes.
Exit status 0 when the answer could be read (usable or not), 1 when the cloud could not be asked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import sys

DISABLED_TRAIT = 'COMPUTE_STATUS_DISABLED'
CONNECTION_KEYS = ('cloud', 'auth', 'auth_type', 'region_name', 'interface', 'api_timeout')


def check(conn, host):
    reasons = []
    services = conn.compute.get('/os-services', params={'host': host, 'binary': 'nova-compute'},
                                microversion='2.53').json()['services']
    if not services:
        return {'host': host, 'usable': False, 'reasons': ['no nova-compute service on %s' % host],
                'service': None, 'providers': []}
    service = services[0]
    summary = {'status': service['status'], 'state': service['state'],
               'forced_down': service.get('forced_down'), 'disabled_reason': service.get('disabled_reason')}
    if service['status'] != 'enabled':
        reasons.append('the service is %s (%s)' % (service['status'], service.get('disabled_reason')))
    if service['state'] != 'up':
        reasons.append('the service is %s' % service['state'])
    if service.get('forced_down'):
        reasons.append('the service is forced down')
    hypervisors = conn.compute.get('/os-hypervisors/detail', microversion='2.53').json()['hypervisors']
    providers = []
    for hypervisor in hypervisors:
        if (hypervisor.get('service') or {}).get('host') != host:
            continue
        # Since compute microversion 2.53 a hypervisor's id is its compute node's UUID, which is also
        # its resource provider's UUID in Placement.
        traits = conn.placement.get('/resource_providers/%s/traits' % hypervisor['id'],
                                    microversion='1.6').json()['traits']
        disabled = DISABLED_TRAIT in traits
        providers.append({'id': hypervisor['id'], 'name': hypervisor['hypervisor_hostname'],
                          'traits_disabled': disabled})
        if disabled:
            reasons.append('Placement still marks provider %s with %s'
                           % (hypervisor['hypervisor_hostname'], DISABLED_TRAIT))
    if not providers:
        reasons.append('no compute node of %s is known to Nova' % host)
    return {'host': host, 'usable': not reasons, 'reasons': reasons, 'service': summary, 'providers': providers}


def main():
    request = json.load(sys.stdin)
    try:
        import openstack
    except ImportError:
        print(json.dumps({'error': 'openstacksdk is not installed for %s' % sys.executable}))
        return 1
    config = {}
    cloud = request.get('cloud')
    if isinstance(cloud, dict):
        config.update(cloud)
    else:
        config.update((key, request[key]) for key in CONNECTION_KEYS if request.get(key))
    try:
        conn = openstack.connect(**config)
        try:
            answer = check(conn, request['host'])
        finally:
            conn.close()
    except Exception as error:  # pylint: disable=broad-except  # any SDK or connection failure
        print(json.dumps({'error': 'cannot ask the cloud: %s' % error}))
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == '__main__':
    sys.exit(main())
