#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: host_service
short_description: Disable, enable, force down or up a Nova compute service
version_added: 0.1.0
description:
  - Sets the status of one compute service (V(enabled) or V(disabled), with a reason) and its
    C(forced_down) flag, through Nova's service API by UUID (compute microversion 2.53 or later).
  - Idempotent. A service already as asked is left alone, and a repeat reports no change.
  - Check mode reads the service and reports what would change, touching nothing.
  - A module of its own, apart from M(vmops.lifecycle.host_evacuate). Operators disable hosts without
    draining them (keep new instances off a host that is being watched, before a maintenance window, or
    after a drain to keep it empty), and force a host down when fencing tells them it is dead, before
    any evacuation. Each of those is one small, reversible act worth its own task, its own check mode
    and its own diff. host_evacuate uses the same code to disable the host it drains.
  - OpenStack only. The libvirt backend has no compute service; the module refuses it before connecting.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  host:
    description:
      - Name of the compute host, as Nova's services list shows it.
    type: str
    required: true
  binary:
    description:
      - The service binary.
    type: str
    default: nova-compute
  state:
    description:
      - V(disabled) keeps the scheduler from placing new instances on the host. Instances already there
        keep running.
      - V(enabled) lets the scheduler use the host again and clears the reason.
      - Leave it out to change only O(forced_down).
    type: str
    choices: [enabled, disabled]
  disabled_reason:
    description:
      - Reason recorded with O(state=disabled). A different reason on an already disabled service is
        a change.
    type: str
  forced_down:
    description:
      - V(true) marks the service down at once, without waiting for Nova to miss its heartbeats, so
        instances can be evacuated. Needs O(fenced=true).
      - V(false) clears the mark. The service then reads up again at its next report.
    type: bool
  fenced:
    description:
      - States that the host is fenced (powered off or cut from storage and network). Required with
        O(forced_down=true), since two copies of an instance would otherwise run.
    type: bool
    default: false
  wait_for_placement:
    description:
      - With O(state=enabled), also wait (up to O(timeout) seconds) until the scheduler can place
        servers on the host again - its service enabled and up, and none of its resource providers
        marked C(COMPUTE_STATUS_DISABLED) in Placement (Nova clears that trait a little after the
        enable, and the scheduler's pre-filter leaves marked providers out).
      - In check mode, one look without waiting; RV(placement) says what it saw.
      - Needs Placement API 1.29 (Rocky) and compute microversion 2.53 (Pike).
    type: bool
    default: false
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads the service and reports the change it would make.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Status, reason, forced_down and state before and after.
notes:
  - O(wait) does not apply; the service API acts at once. O(timeout) bounds only O(wait_for_placement).
'''

EXAMPLES = r'''
- name: Keep new instances off compute3 before its maintenance
  vmops.lifecycle.host_service:
    cloud: production
    host: compute3
    state: disabled
    disabled_reason: firmware update CHG-1234

- name: Compute5 is powered off by the fencing agent, tell Nova now
  vmops.lifecycle.host_service:
    cloud: production
    host: compute5
    forced_down: true
    fenced: true

- name: Back in service
  vmops.lifecycle.host_service:
    cloud: production
    host: compute5
    state: enabled
    forced_down: false

- name: Enable compute3 and wait until the scheduler can use it again
  vmops.lifecycle.host_service:
    cloud: production
    host: compute3
    state: enabled
    wait_for_placement: true
    timeout: 300
'''

RETURN = r'''
service:
  description: The service before and after.
  returned: always
  type: dict
  contains:
    before:
      description: The service as read first (id, host, binary, status, state, disabled_reason, forced_down, zone).
      type: dict
    after:
      description: The service as Nova returned it after the change (in check mode, as it would be).
      type: dict
placement:
  description: With O(wait_for_placement), whether the scheduler can use the host, and why not.
  returned: when O(wait_for_placement=true)
  type: dict
  contains:
    usable:
      description: The service is enabled and up and no provider carries C(COMPUTE_STATUS_DISABLED).
      type: bool
    reasons:
      description: What still keeps the scheduler away (empty when usable).
      type: list
      elements: str
    providers:
      description: The host's resource providers (id, name, disabled_trait).
      type: list
      elements: dict
    waited:
      description: Seconds waited.
      type: float
api_requests:
  description: HTTP requests this run sent to the cloud (authentication included).
  returned: always
  type: int
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import new_module, open_with, run_module
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.services import (
    ComputeServices, ensure_service, validate_service_request)


def main():
    module = new_module(
        dict(
            host=dict(type='str', required=True),
            binary=dict(type='str', default='nova-compute'),
            state=dict(type='str', choices=['enabled', 'disabled']),
            disabled_reason=dict(type='str'),
            forced_down=dict(type='bool'),
            fenced=dict(type='bool', default=False),
            wait_for_placement=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    validate_service_request(module.params)
    with open_with(module, {'openstack': ComputeServices.open}) as services:
        result = ensure_service(services, module.params, check_mode=module.check_mode)
    if not module._diff:
        result.pop('diff')
    return result


if __name__ == '__main__':
    main()
