# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling_plan module on libvirt: read every named host once (read-only connections), plan.  Reads only.

libvirt has no scheduler and no inventory of hosts, so the plan is the only thing that chooses destinations,
and the hosts are the URIs the options name:
  * the roll (`hosts`, required): the hosts to maintain, as this controller reaches them;
  * destinations: hosts maintained already, and the spare hosts (`spare_hosts`); nothing else is known;
  * `excluded_hosts` are read (their domains count nowhere) and take nothing.

Room, counted as Nova's defaults would count it on the same node: vCPUs at an allocation ratio of 4.0, RAM
at 1.0 with 512 MiB reserved for the host, from virNodeGetInfo.  Every defined domain counts with its
maximum memory and vCPUs, running or not, since a stopped domain moved to a host is started there later.
Disks are not counted (a libvirt drain copies only what is not on shared storage, and reports a full
disk itself).  libvirt has no server groups, so none constrains the plan.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import ConnectionFailed, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import (
    RollHost, RollInstance, RollRefused, check_roll_options, name_what_waits, plan_roll, refusal_message,
    roll_result, unique_names)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import redact_uri
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.evacuation import is_uri
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.inventory import domain_state, open_read_only

POLICY_OPTIONS = ('suspended_policy', 'shelved_policy', 'rescued_policy', 'error_policy')
CPU_ALLOCATION_RATIO = 4.0
RESERVED_RAM_MB = 512
ZONE = 'libvirt'


def check_options(params):
    """The module's options on libvirt, before connecting: every host a URI, the roll named."""
    if not params.get('hosts'):
        raise InvalidRequest('hosts is required on libvirt and may not be empty: the libvirt URIs of the hosts to '
                             'roll (there is no inventory of hosts to take them from).')
    named = [(option, name) for option in ('hosts', 'maintained', 'spare_hosts', 'excluded_hosts')
             for name in params.get(option) or ()]
    bad = ['%s (%s)' % (redact_uri(name), option) for option, name in named if not is_uri(name)]
    if bad:
        raise InvalidRequest('On libvirt every host is a libvirt URI as this controller reaches it (for example '
                             'qemu+ssh://root@host2/system); not URIs: %s.' % ', '.join(bad))
    strays = [redact_uri(name) for name in params.get('maintained') or () if name not in params['hosts']]
    if strays:
        raise InvalidRequest('maintained names hosts that are not in hosts: %s.' % ', '.join(strays))
    check_roll_options(params['hosts'], params.get('maintained') or (), params.get('spare_hosts') or (),
                       params.get('excluded_hosts') or (), params.get('max_batch'), params.get('max_moves_in_flight'))


def read_host(uri, opener=None):
    """(RollHost, [RollInstance]) of one host, over a read-only connection closed after the read."""
    conn = open_read_only(uri, opener)
    instances = []
    try:
        info = conn.getInfo()                    # [model, memory MiB, cpus, ...]
        for domain in conn.listAllDomains(0):
            state, max_kib, _memory, vcpus, _cpu_time = domain.info()
            instances.append(RollInstance(
                id=domain.UUIDString(), name=domain.name(), host=uri, state=domain_state(domain, state),
                size=(vcpus, max_kib // 1024, 0), group=None, policy=None, az=ZONE))
    except Exception as error:  # pylint: disable=broad-except
        raise ConnectionFailed('Reading libvirt host %s failed: %s' % (redact_uri(uri), error))
    finally:
        conn.close()
    host = RollHost(name=uri, az=ZONE, total=(info[2], info[1], 0), reserved=(0, RESERVED_RAM_MB, 0),
                    ratio=(CPU_ALLOCATION_RATIO, 1.0, 1.0), used=None)
    return host, instances


class LibvirtRollingPlanReader(object):
    """One read of the named hosts and the plan made from it."""

    def __init__(self, opener=None):
        self.opener = opener
        self.reads = 0

    @classmethod
    def open(cls, params):  # pylint: disable=unused-argument
        return cls()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def plan(self, params):
        """The result for the module; raises RollRefused (with the whole result) when there is no plan."""
        roll = unique_names(params['hosts'])
        spares = unique_names(params.get('spare_hosts') or [])
        excluded = unique_names(params.get('excluded_hosts') or [])
        hosts, instances = [], []
        for uri in unique_names(roll + spares + excluded):
            host, on_host = read_host(uri, self.opener)
            self.reads += 1
            hosts.append(host)
            instances.extend(on_host)
        policies = dict((key, params[key]) for key in POLICY_OPTIONS if params.get(key) is not None)
        plan = plan_roll(hosts, instances, roll, maintained=unique_names(params.get('maintained') or []),
                         spares=spares, excluded=excluded, max_batch=params['max_batch'],
                         max_moves_in_flight=params.get('max_moves_in_flight'), policies=policies)
        name_what_waits(plan, instances)
        result = roll_result(plan)
        for batch in result['batches']:
            batch['drains'] = drains_of(batch['moves'])
        result.update(roll=[redact_uri(uri) for uri in roll], spare_hosts=[redact_uri(uri) for uri in spares],
                      excluded=[{'host': redact_uri(uri), 'reason': 'excluded_hosts'} for uri in excluded],
                      left_out=[], hosts_read=self.reads)
        if not plan.ok:
            raise RollRefused(refusal_message(plan), **result)
        result['changed'] = False
        return result


def drains_of(moves):
    """A libvirt drain has one destination, so a batch's moves become one drain per source and destination:
    [{host, target, instances (domain UUIDs)}], in the order of the moves."""
    drains = []
    for move in moves:
        for drain in drains:
            if drain['host'] == move['from'] and drain['target'] == move['to']:
                drain['instances'].append(move['id'])
                break
        else:
            drains.append({'host': move['from'], 'target': move['to'], 'instances': [move['id']]})
    return drains
