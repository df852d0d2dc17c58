#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_state
short_description: Bring a virtual machine instance to a power state, idempotently
version_added: 0.1.0
description:
  - Reads the instance's current state, plans the shortest legal sequence of operations to the
    wanted state, then performs them one by one, waiting on each.
  - On libvirt the states are V(running), V(stopped) (shut off), V(paused) (guest kept in the host's
    memory, fast to resume, lost if the host reboots), V(suspended) (libvirt managed save, guest
    memory saved to disk, survives a host reboot) and V(absent) (undefined).
  - For example, on libvirt V(suspended) to V(paused) is restore, then pause; V(paused) to
    V(stopped) is resume, then a graceful shutdown.
  - A graceful stop asks the guest to shut down (guest agent if the domain has one, else the ACPI
    power button) and never cuts the power unless O(force_stop_fallback) or O(stop_method=hard)
    say so.
  - V(absent) on libvirt removes the instance's definition only; its disks stay where they are.
  - On OpenStack the states are Nova's, at compute API microversion 2.73. They are V(running)
    (ACTIVE), V(stopped) (SHUTOFF), V(paused), V(suspended), V(shelved) (also fulfilled by
    SHELVED_OFFLOADED), V(shelved_offloaded), V(rescued) (RESCUE) and V(absent) (deleted, that is
    terminated). V(error) and a resize waiting for confirmation are only ever observed.
  - For example, on OpenStack V(shelved_offloaded) to V(paused) is unshelve, then pause. V(rescued)
    to V(stopped) is unrescue, then stop. V(paused) to V(suspended) is unpause, then suspend.
  - Waits on OpenStack watch the task state as well as the status, and fail at once when the server
    goes to ERROR, quoting Nova's fault message.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  name:
    description:
      - Name or UUID of the instance. A value that parses as a UUID is looked up as one first.
    type: str
    required: true
    aliases: [instance]
  state:
    description:
      - The state the instance should be in.
      - V(rebooted) always acts. It reboots a running instance (see O(reboot_type)) and starts one
        that is off; a paused or suspended one is brought back to running, then rebooted.
      - V(shelved), V(shelved_offloaded) and V(rescued) exist for the OpenStack backend; the libvirt
        backend refuses them with an error before touching anything.
    type: str
    required: true
    choices: [running, stopped, paused, suspended, shelved, shelved_offloaded, rescued, absent, rebooted]
  reboot_type:
    description:
      - With O(state=rebooted), V(soft) asks the guest to reboot and waits until it did;
        V(hard) resets the virtual machine at once. Defaults to V(soft).
      - Only valid with O(state=rebooted).
    type: str
    choices: [soft, hard]
  stop_method:
    description:
      - V(graceful) asks the guest to shut down and waits for it.
      - V(hard) cuts the power without asking (libvirt destroy) and allows other steps that discard
        guest memory, such as dropping a managed save image to reach V(stopped).
    type: str
    choices: [graceful, hard]
    default: graceful
  shutdown_timeout:
    description:
      - Seconds a graceful shutdown may take. Defaults to 120. Counts towards O(timeout) and must not
        exceed it. Only valid with O(stop_method=graceful).
    type: int
  force_stop_fallback:
    description:
      - If a graceful shutdown has not finished after O(shutdown_timeout), cut the power instead of
        failing. The result records that the fallback was used. Needs O(wait=true).
      - On OpenStack, Nova's own stop already does this, after the compute's C(shutdown_timeout).
    type: bool
    default: false
  locked:
    description:
      - OpenStack only. V(true) locks the server after any state change, V(false) unlocks it before
        any state change, and omitting the option leaves the lock as it is.
      - A locked server that needs a state change fails with a clear error unless O(locked=false)
        is given; nothing is touched.
    type: bool
  lock_reason:
    description:
      - OpenStack only. The reason recorded with the lock, for O(locked=true). A different reason on
        an already locked server unlocks and locks it again.
    type: str
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the plan it would run; touches nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the state before and after.
notes:
  - Part of the action group C(vmops.lifecycle.instances), so connection and wait options can be set
    once with C(module_defaults).
seealso:
  - name: libvirt domain lifecycle
    description: What libvirt's shutdown, destroy, managed save and reset do.
    link: https://libvirt.org/html/libvirt-libvirt-domain.html
'''

EXAMPLES = r'''
- name: Pause a guest (state kept in memory)
  vmops.lifecycle.instance_state:
    name: web1
    state: paused

- name: Save a guest to disk before a host reboot
  vmops.lifecycle.instance_state:
    name: web1
    state: suspended
    libvirt_uri: qemu+ssh://root@hv03.example.org/system

- name: Stop gracefully, cutting the power if the guest ignores us for 60 seconds
  vmops.lifecycle.instance_state:
    name: db1
    state: stopped
    shutdown_timeout: 60
    force_stop_fallback: true

- name: Hard reboot by UUID
  vmops.lifecycle.instance_state:
    name: 6f1c2d2e-59d4-4f4e-9d6e-0f5a3c9b2a10
    state: rebooted
    reboot_type: hard

- name: Shelve a server for the night and lock it so nobody starts it by accident
  vmops.lifecycle.instance_state:
    cloud: production
    name: batch-worker-07
    state: shelved
    locked: true
    lock_reason: CHG-4711 shelved until Monday

- name: Bring it back, unlocking first
  vmops.lifecycle.instance_state:
    cloud: production
    name: batch-worker-07
    state: running
    locked: false

- name: Set the connection once for a whole play
  hosts: localhost
  module_defaults:
    group/vmops.lifecycle.instances:
      libvirt_uri: qemu+tcp://hv04.example.org/system
      timeout: 300
  tasks:
    - name: Start every guest of the batch
      vmops.lifecycle.instance_state:
        name: "{{ item }}"
        state: running
      loop: [app1, app2, app3]
'''

RETURN = r'''
instance:
  description: The instance before and after, and what was done to it.
  returned: always, and on failure once the instance was found
  type: dict
  contains:
    name:
      description: Instance name.
      type: str
      sample: web1
    id:
      description: Instance UUID (null if it never existed).
      type: str
      sample: 6f1c2d2e-59d4-4f4e-9d6e-0f5a3c9b2a10
    backend:
      description: Backend that manages it.
      type: str
      sample: libvirt
    location:
      description: Where the backend points (the libvirt URI, or the OpenStack cloud).
      type: str
      sample: qemu:///system
    state_before:
      description: State before the run.
      type: str
      sample: suspended
    state:
      description: State after the run, read back from the backend (in check mode, the current state).
      type: str
      sample: paused
    plan:
      description: The verbs planned, in order (in check mode, what would run).
      type: list
      elements: str
      sample: [restore, pause]
    executed:
      description: The steps performed, each with its verb, from and to states, and seconds taken
        (including the wait). C(fallback) names a forced fallback that was used.
      type: list
      elements: dict
      sample: [{verb: restore, from: suspended, to: running, seconds: 0.71},
               {verb: pause, from: running, to: paused, seconds: 0.04}]
    elapsed:
      description: Seconds the module spent on this instance.
      type: float
      sample: 0.81
    details:
      description: Backend-specific facts. On libvirt, the libvirt state and reason and the reboots
        seen. On OpenStack, the Nova status, task_state, vm_state, power_state, locked,
        locked_reason, host (admin only) and flavor.
      type: dict
    api_requests:
      description: HTTP requests this run sent to the cloud, authentication included (OpenStack only).
      type: int
      sample: 7
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import (
    StateRequest, ensure_state, validate_request)


def main():
    module = new_module(
        dict(
            name=dict(type='str', required=True, aliases=['instance']),
            state=dict(type='str', required=True,
                       choices=['running', 'stopped', 'paused', 'suspended', 'shelved',
                                'shelved_offloaded', 'rescued', 'absent', 'rebooted']),
            reboot_type=dict(type='str', choices=['soft', 'hard']),
            stop_method=dict(type='str', default='graceful', choices=['graceful', 'hard']),
            shutdown_timeout=dict(type='int'),
            force_stop_fallback=dict(type='bool', default=False),
            locked=dict(type='bool'),
            lock_reason=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = StateRequest(
        identifier=params['name'], wanted=params['state'], hard=params['stop_method'] == 'hard',
        reboot_type=params['reboot_type'], shutdown_timeout=params['shutdown_timeout'],
        force_fallback=params['force_stop_fallback'], wait=params['wait'], timeout=params['timeout'],
        locked=params['locked'], lock_reason=params['lock_reason'])
    return converge_request(module, request, validate_request, ensure_state)


if __name__ == '__main__':
    main()
