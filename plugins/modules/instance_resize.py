#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_resize
short_description: Resize an OpenStack server to a flavor, with confirm or revert
version_added: 0.1.0
description:
  - Brings a server to a flavor through Nova's resize. Nova resizes in two phases. The server first
    waits in VERIFY_RESIZE, where the resize can still be reverted, and a confirm then makes it final.
  - Idempotent. A server that already has the flavor is left alone. A resize to the wanted flavor
    that is waiting is confirmed (O(finish=confirm)) or left waiting (O(finish=keep)).
  - A separate module rather than an option of M(vmops.lifecycle.instance_state). A resize changes a
    property (the flavor) and moves the server between hosts, while instance_state moves power
    states. Keeping them apart keeps each module's check mode and diff about one thing.
  - Confirm and revert return the server to the power state it had before the resize.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  name:
    description:
      - Name or ID of the server.
    type: str
    required: true
    aliases: [instance]
  flavor:
    description:
      - Name or ID of the wanted flavor. Required unless O(finish=revert).
    type: str
  finish:
    description:
      - V(confirm) resizes and confirms.
      - V(keep) resizes and leaves the server waiting in VERIFY_RESIZE, so that it can be checked
        before a later task confirms or reverts it.
      - V(revert) undoes a resize that is waiting; it does nothing when none is.
    type: str
    choices: [confirm, keep, revert]
    default: confirm
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
    details: Shows the flavor and state before and after.
notes:
  - The libvirt backend does not resize; the module refuses it before connecting.
'''

EXAMPLES = r'''
- name: Give the database more memory, and make it final
  vmops.lifecycle.instance_resize:
    cloud: production
    name: db1
    flavor: m1.large

- name: Resize, but keep the old flavor available until the checks pass
  vmops.lifecycle.instance_resize:
    cloud: production
    name: app3
    flavor: m1.medium
    finish: keep

- name: The checks failed, go back
  vmops.lifecycle.instance_resize:
    cloud: production
    name: app3
    finish: revert
'''

RETURN = r'''
instance:
  description: The server before and after, and what was done.
  returned: always
  type: dict
  contains:
    flavor_before:
      description: Flavor name before the run.
      type: str
    flavor:
      description: Flavor name after the run, as Nova reports it.
      type: str
    state_before:
      description: State before the run.
      type: str
    state:
      description: State after the run (C(resize_pending) while a resize waits for a verdict).
      type: str
    plan:
      description: The verbs planned (resize, confirm_resize, revert_resize).
      type: list
      elements: str
    executed:
      description: The verbs performed, with seconds each.
      type: list
      elements: dict
    api_requests:
      description: HTTP requests this run sent to the cloud.
      type: int
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.resize import (
    ResizeRequest, ensure_flavor, validate_resize_request)


def main():
    module = new_module(
        dict(
            name=dict(type='str', required=True, aliases=['instance']),
            flavor=dict(type='str'),
            finish=dict(type='str', default='confirm', choices=['confirm', 'keep', 'revert']),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = ResizeRequest(identifier=params['name'], flavor=params['flavor'], finish=params['finish'],
                            wait=params['wait'], timeout=params['timeout'])
    return converge_request(module, request, validate_resize_request, ensure_flavor)


if __name__ == '__main__':
    main()
