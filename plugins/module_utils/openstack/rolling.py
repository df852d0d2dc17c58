# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling_plan module on OpenStack: read the cloud once, check the options against it, plan.  Reads only.

Which hosts take part, when the options leave it open:
  * the roll (`hosts`): every compute host whose service is up, the spares apart, when not given.  A host that is down
    cannot be drained (its instances would need an evacuation), so naming one is refused;
  * destinations: hosts maintained already, spare hosts, and the other hosts of the cloud, except those
    whose service is not enabled and up (the scheduler would refuse them as a target) and those in
    `excluded_hosts`.  A host of the roll that is disabled now (a run that stopped midway) still counts
    as a destination once its batch is done, since the roll enables each host again after its work;
  * a spare host must be enabled and up: a disabled one would take nothing.

Nova's scheduler checks each planned move, so the plan keeps to what it accepts: no member of an affinity
group is drained (ServerGroupAffinityFilter accepts only the hosts where the group already is), and no
anti-affinity member lands on a host that another member of its group left by a live move during the roll
(the scheduler's cached view holds the member there until the compute's periodic sync).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import (
    RollRefused, check_roll_options, name_what_waits, plan_roll, refusal_message, roll_result, unique_names)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.inventory import rolling_read
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.request import RequestLayer

POLICY_OPTIONS = ('suspended_policy', 'shelved_policy', 'rescued_policy', 'error_policy')
DOWN = ('down', 'forced_down')


def check_options(params):
    """The module's options, before connecting."""
    if params.get('hosts') is not None and not params['hosts']:
        # An empty inventory group must not turn into "every host".
        raise InvalidRequest('hosts is empty: name the hosts to roll, or leave hosts out to roll every compute host.')
    check_roll_options(params.get('hosts'), params.get('maintained') or (), params.get('spare_hosts') or (),
                       params.get('excluded_hosts') or (), params.get('max_batch'), params.get('max_moves_in_flight'))


class RollingPlanReader(object):
    """One read of the cloud (over the one request layer of the run) and the plan made from it."""

    def __init__(self, requests):
        self.requests = requests

    @classmethod
    def open(cls, params):
        return cls(RequestLayer.open(params))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.requests.close()
        return False

    def plan(self, params):
        """The result for the module; raises RollRefused (with the whole result) when there is no plan."""
        hosts, instances, statuses = rolling_read(self.requests)
        choice = choose_hosts(params, statuses, self.requests.cloud_label)
        policies = dict((key, params[key]) for key in POLICY_OPTIONS if params.get(key) is not None)
        plan = plan_roll(hosts, instances, choice['roll'], maintained=choice['maintained'],
                         spares=choice['spares'], excluded=choice['excluded'], max_batch=params['max_batch'],
                         max_moves_in_flight=params.get('max_moves_in_flight'), policies=policies,
                         move_affinity=False, reuse_group_sources=False)
        name_what_waits(plan, instances)
        result = roll_result(plan)
        result.update(roll=choice['roll'], spare_hosts=choice['spares'], excluded=choice['excluded_why'],
                      left_out=choice['left_out'], api_requests=self.requests.request_count())
        if not plan.ok:
            raise RollRefused(refusal_message(plan), **result)
        result['changed'] = False
        return result


def choose_hosts(params, statuses, cloud='the cloud'):
    """The roll, the maintained hosts, the spares and the excluded hosts, from the options and each
    host's service status ({host: enabled, disabled, down, forced_down}); refuses unknown or unusable hosts."""
    given = [('hosts', params.get('hosts') or []), ('maintained', params.get('maintained') or []),
             ('spare_hosts', params.get('spare_hosts') or []), ('excluded_hosts', params.get('excluded_hosts') or [])]
    unknown = ['%s (%s)' % (name, option) for option, names in given for name in names if name not in statuses]
    if unknown:
        raise InvalidRequest('Not a compute host of %s: %s. Compute hosts: %s.'
                             % (cloud, ', '.join(unknown), ', '.join(sorted(statuses))))
    maintained = unique_names(params.get('maintained') or [])
    if params.get('hosts'):
        roll = unique_names(params['hosts'])
        left_out = []
    else:
        spares = set(params.get('spare_hosts') or ())
        roll = [name for name in sorted(statuses)
                if name not in spares and (statuses[name] not in DOWN or name in maintained)]
        left_out = [{'host': name, 'reason': 'service %s' % statuses[name]}
                    for name in sorted(statuses) if name not in roll and name not in spares]
    down = ['%s (%s)' % (name, statuses[name]) for name in roll if statuses[name] in DOWN and name not in maintained]
    if down:
        raise InvalidRequest('Host(s) of the roll whose compute service is down: %s. Their instances cannot be '
                             'moved live or cold; evacuate them (vmops.lifecycle.host_evacuate mode=evacuate) or '
                             'leave them out of hosts.' % ', '.join(down))
    check_roll_options(roll, maintained, params.get('spare_hosts') or (), params.get('excluded_hosts') or (),
                       params.get('max_batch'), params.get('max_moves_in_flight'))
    spares = unique_names(params.get('spare_hosts') or [])
    unusable = ['%s (%s)' % (name, statuses[name]) for name in spares if statuses[name] != 'enabled']
    if unusable:
        raise InvalidRequest('Spare host(s) whose compute service is not enabled and up: %s. A spare takes '
                             'instances; enable it first (vmops.lifecycle.host_service state=enabled).'
                             % ', '.join(unusable))
    todo = set(roll) - set(maintained)
    asked = set(params.get('excluded_hosts') or ())
    excluded_why = []
    for name in sorted(statuses):
        if name in asked:
            excluded_why.append({'host': name, 'reason': 'excluded_hosts'})
        elif name not in todo and statuses[name] != 'enabled':
            excluded_why.append({'host': name, 'reason': 'service %s' % statuses[name]})
    return {'roll': roll, 'maintained': maintained, 'spares': spares, 'left_out': left_out,
            'excluded': [entry['host'] for entry in excluded_why], 'excluded_why': excluded_why}
