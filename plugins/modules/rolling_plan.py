#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: rolling_plan
short_description: Plan a rolling maintenance of compute hosts in which each instance moves at most once
version_added: 0.1.0
description:
  - Reads the cloud once (compute services, hypervisors, servers with their flavors, server groups, and each
    host's inventories and usages in Placement) and returns the plan of a rolling maintenance over O(hosts).
    It says which hosts go down together, in which order, and where each instance goes.
  - An instance leaves a host only for a host already maintained or a host outside the roll, so no instance
    moves twice. Anti-affinity members never share a host and instances stay in their availability zone.
    On every host after every move, used plus moved in stays within C((total - reserved) * allocation_ratio)
    for vCPU, RAM and disk.
  - Nova's scheduler moves no member of an affinity group away from the others, so a roll that must drain a
    host holding affinity members is refused, naming the group and the host; leave that host out of O(hosts)
    (it still takes instances) or move the group first. An anti-affinity member never lands on a host that
    another member of its group left by a live move during the roll, since Nova's scheduler may still count
    the member that left there.
  - Instance states follow the policies of M(vmops.lifecycle.host_evacuate), with the same defaults.
  - Changes nothing, in check mode or not; RV(changed) is always false.
  - When no such plan exists, the module fails. Its message says how much vCPU, RAM and disk to add per
    availability zone, or which instances or server groups stand in the way. The result still holds the
    structured RV(refusals) and RV(missing).
  - On libvirt there is no scheduler and no list of hosts, so the plan alone chooses each domain's destination,
    and every host is a libvirt URI as this controller reaches it. O(hosts) is required. Destinations are the
    hosts of the roll once maintained and O(spare_hosts). Room is counted from each node's CPUs and memory
    (virNodeGetInfo) as Nova's defaults would, with vCPUs at an allocation ratio of 4.0, RAM at 1.0 with 512 MiB
    reserved for the host, every defined domain counted with its maximum memory and vCPUs, running or not.
    Disks are not counted. libvirt has no server groups.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  hosts:
    description:
      - The compute hosts to maintain, as Nova's services list names them (on libvirt, their URIs). When hosts
        weigh the same, the plan keeps this order.
      - Default every compute host whose service is up, except the spare hosts. Hosts that are down are left out
        and listed in RV(left_out). Naming a host that is down is refused, since its instances can only be
        evacuated.
      - An empty list is refused, so that an empty inventory group does not mean every host.
    type: list
    elements: str
  maintained:
    description:
      - Hosts of O(hosts) already maintained, for resuming a roll that stopped. They are not drained again,
        and they take instances from the start.
    type: list
    elements: str
    default: []
  spare_hosts:
    description:
      - Hosts outside the roll that are there to take instances (for example a host added for the roll). The
        other hosts outside the roll take instances too. A spare must have its service enabled and up.
    type: list
    elements: str
    default: []
  excluded_hosts:
    description:
      - Hosts that take no instance. Hosts outside the roll whose service is disabled or down are excluded
        anyway.
      - A host of the roll may be listed. It is then drained in its turn and takes nothing afterwards.
    type: list
    elements: str
    default: []
  max_batch:
    description:
      - Most hosts down at once.
    type: int
    default: 1
  max_moves_in_flight:
    description:
      - Most moves in flight across the cloud. Each host of a batch gets an equal share as its window
        (RV(batches[].window)), so a batch has at most this many hosts. Default no limit beyond O(max_batch).
    type: int
  suspended_policy:
    description:
      - As in M(vmops.lifecycle.host_evacuate). V(move) moves a suspended instance. V(skip) leaves it on its
        host, which goes down with it. V(fail) refuses the plan.
    type: str
    choices: [move, skip, fail]
    default: move
  shelved_policy:
    description:
      - V(move) offloads a shelved instance. It leaves its host and lands nowhere (RV(offloads)).
      - V(skip) and V(fail) as for O(suspended_policy).
    type: str
    choices: [move, skip, fail]
    default: move
  rescued_policy:
    description:
      - V(fail) refuses the plan while an instance is rescued, since someone is repairing it.
      - V(move) moves it live; V(skip) leaves it on its host.
    type: str
    choices: [move, skip, fail]
    default: fail
  error_policy:
    description:
      - V(skip) leaves instances in error on their host (RV(stay)). V(move) plans a cold move for them.
        V(fail) refuses the plan.
    type: str
    choices: [skip, fail, move]
    default: skip
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; check mode returns the same plan.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - O(wait) and O(timeout) do not apply; the module sends reads only. O(retry_budget) bounds the retries of each read.
  - Needs an admin role (compute services, hypervisors, all projects' servers, Placement).
  - A host whose Placement inventory cannot be read takes nothing.
  - The plan is as good as the read it comes from. Servers created or moved after the read are not in it, so
    plan again right before the roll.
'''

EXAMPLES = r'''
- name: Plan the roll of every compute host, two at a time, at most eight moves in flight
  vmops.lifecycle.rolling_plan:
    cloud: production
    max_batch: 2
    max_moves_in_flight: 8
  register: roll

- name: Show the batches
  ansible.builtin.debug:
    msg: "batch {{ item.index }}: {{ item.hosts | join(', ') }}, {{ item.moves | length }} moves"
  loop: "{{ roll.batches }}"
  loop_control:
    label: "{{ item.index }}"

- name: Resume after compute1 and compute2 were done, with compute9 added as a spare
  vmops.lifecycle.rolling_plan:
    cloud: production
    hosts: [compute1, compute2, compute3, compute4]
    maintained: [compute1, compute2]
    spare_hosts: [compute9]
  register: roll
'''

RETURN = r'''
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
ok:
  description: Whether a plan exists. A refused plan fails the module, so this is true on success.
  returned: always
  type: bool
roll:
  description: The hosts of the roll (O(hosts), or every compute host that is up), each once.
  returned: always
  type: list
  elements: str
batches:
  description: The batches in order. Each batch's hosts go down together once the batch before is done.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: The batch's number, from 1.
      type: int
    hosts:
      description: The hosts that go down together.
      type: list
      elements: str
    window:
      description: Moves in flight per host of the batch, from O(max_moves_in_flight); None without it.
      type: int
    moves:
      description:
        - One entry per instance that moves, with C(instance) (name), C(id), C(state), C(from), C(to),
          C(move) (V(live) or V(cold)), C(note) (for example how a suspended instance moves), C(az), C(group)
          (server group ID or None) and C(size) (C(vcpus), C(ram_mb), C(disk_gb)).
        - C(to) is a host maintained before this batch or a host outside the roll, never a host of this
          batch or a later one.
      type: list
      elements: dict
    drains:
      description:
        - libvirt only. The batch's moves as drains, one per source host and destination (a libvirt drain has one
          destination), each with C(host), C(target) and C(instances) (domain UUIDs), for
          M(vmops.lifecycle.host_evacuate).
      type: list
      elements: dict
      returned: on libvirt
    offloads:
      description: Shelved instances that leave their host and land nowhere (C(to) is None, C(move) V(offload)).
      type: list
      elements: dict
    stay:
      description: Instances that stay on their host and go down with it (C(instance), C(id), C(host), C(reason)).
      type: list
      elements: dict
    free_before:
      description: Per availability zone, the free C(vcpus), C(ram_mb) and C(disk_gb) of the destinations before the batch.
      type: dict
    free_after:
      description: The same after the batch, with the batch's hosts added as destinations.
      type: dict
stay:
  description: All instances that stay, over all batches (as in RV(batches[].stay)).
  returned: always
  type: list
  elements: dict
offloads:
  description: All instances offloaded, over all batches (as in RV(batches[].offloads)).
  returned: always
  type: list
  elements: dict
free_before:
  description: Per availability zone, the free room of the destinations before the first batch (empty without batches).
  returned: always
  type: dict
free_after:
  description: Per availability zone, the free room after the last batch (empty without batches).
  returned: always
  type: dict
totals:
  description: Counts of C(batches), C(hosts), C(moves), C(live), C(cold), C(offloads) and C(stay).
  returned: always
  type: dict
refusals:
  description:
    - Why no plan exists, one entry per cause, each with C(reason) and C(message). V(capacity) gives C(az),
      C(hosts) (the hosts that cannot go), C(missing), C(largest) (the largest instances on those hosts) and
      C(anti_affinity_groups) (groups with members there). V(state) and V(az) give C(instance), C(id) and C(host).
      V(affinity) gives C(group) and its C(hosts) or C(host) (and C(instances), the IDs of the members that
      would have to move).
    - Empty when the plan is usable.
  returned: always
  type: list
  elements: dict
missing:
  description: Per availability zone, the C(vcpus), C(ram_mb) and C(disk_gb) to add (a spare host) before the roll can go on.
  returned: always
  type: dict
already_maintained:
  description: The hosts of O(maintained) that are in the roll.
  returned: always
  type: list
  elements: str
spare_hosts:
  description: The spare hosts.
  returned: always
  type: list
  elements: str
excluded:
  description: The hosts that take nothing, each with C(host) and C(reason) (V(excluded_hosts), or its service status).
  returned: always
  type: list
  elements: dict
left_out:
  description: Without O(hosts), the compute hosts left out of the roll because their service is down (C(host), C(reason)).
  returned: always
  type: list
  elements: dict
api_requests:
  description: HTTP requests this run sent to the cloud (authentication included).
  returned: on OpenStack
  type: int
hosts_read:
  description: libvirt hosts read (one read-only connection each).
  returned: on libvirt
  type: int
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    chosen_backend, new_module, open_with, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.rolling import LibvirtRollingPlanReader
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.rolling import (
    check_options as check_libvirt_options)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.rolling import RollingPlanReader, check_options

POLICY = dict(type='str', choices=['move', 'skip', 'fail'])
HOSTS = dict(type='list', elements='str', default=[])


def main():
    module = new_module(
        dict(
            hosts=dict(type='list', elements='str'),
            maintained=dict(HOSTS),
            spare_hosts=dict(HOSTS),
            excluded_hosts=dict(HOSTS),
            max_batch=dict(type='int', default=1),
            max_moves_in_flight=dict(type='int'),
            suspended_policy=dict(POLICY, default='move'),
            shelved_policy=dict(POLICY, default='move'),
            rescued_policy=dict(POLICY, default='fail'),
            error_policy=dict(type='str', default='skip', choices=['skip', 'fail', 'move']),
        ),
        supports_check_mode=True,
    )
    run_module(module, plan)


def plan(module):
    if chosen_backend(module.params) == 'libvirt':
        check_libvirt_options(module.params)
    else:
        check_options(module.params)
    with open_with(module, {'openstack': RollingPlanReader.open, 'libvirt': LibvirtRollingPlanReader.open}) as reader:
        return reader.plan(module.params)


if __name__ == '__main__':
    main()
