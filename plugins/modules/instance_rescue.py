#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_rescue
short_description: Boot an instance from a rescue disk with its own disks attached, and back
version_added: 0.1.0
description:
  - V(rescued) boots the instance from a rescue disk, with its own disks attached to the rescue
    guest, so that a guest that no longer boots can be repaired. V(unrescued) boots it from its own
    disks again.
  - Idempotent. A rescued instance is left alone by O(state=rescued), an instance that is not
    rescued by O(state=unrescued).
  - On OpenStack this is Nova's rescue at compute microversion 2.87. A server booted from an image
    gets the rescue disk first and its own disk second, unless the rescue image has the properties
    C(hw_rescue_bus) and C(hw_rescue_device); then Nova uses a stable-device rescue (its disks keep
    their device names and the rescue disk is attached last).
  - A volume-backed server can only be rescued the stable-device way. The rescue image must have
    both properties and the server's compute host must report the trait C(COMPUTE_RESCUE_BFV) in
    Placement. The module checks both first, when the credentials can read Placement, and refuses
    with a clear message otherwise.
  - On libvirt the module does what Nova's libvirt driver does, by hand. The guest is shut down
    (ACPI, then the power is cut after O(shutdown_timeout)). A rescue disk is created next to the
    first disk, as a qcow2 overlay on O(rescue_image), or blank. The domain is redefined with the
    rescue disk first and its own disks behind it (vda becomes vdb), and started. The original
    definition is kept in the domain's C(<metadata>) and defined again by V(unrescued), which also
    deletes the rescue disk. The domain's own disks are attached, never written by the module.
  - A libvirt domain that boots by direct kernel boot is rescued with the same kernel and initramfs,
    or with O(rescue_kernel). The rescue guest then finds the rescue disk as its first disk.
  - Unrescue always ends with the instance running, as in Nova.
  - A module of its own, not a state of M(vmops.lifecycle.instance_state), because a rescue takes a
    rescue image, a password and boot options that mean nothing for any other state.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  instance:
    description:
      - Name or UUID of the instance.
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(rescued) or V(unrescued).
    type: str
    choices: [rescued, unrescued]
    default: rescued
  rescue_image:
    description:
      - OpenStack, name or ID of the image to boot the rescue guest from. Default is the server's
        own image.
      - libvirt, the path, as the hypervisor host sees it, of a disk image that is a volume of a
        storage pool. The rescue disk is a qcow2 overlay on it, so the image itself is never
        written. Without it the rescue disk is blank, which needs direct kernel boot.
    type: str
  admin_password:
    description:
      - OpenStack only. The password Nova sets in the rescue guest. Never logged nor returned.
    type: str
  rescue_kernel:
    description:
      - libvirt only. Kernel (a path on the host) for a direct kernel boot of the rescue guest.
        Default is the domain's own kernel when it has one.
    type: str
  rescue_initrd:
    description:
      - libvirt only. Initramfs (a path on the host) that goes with O(rescue_kernel).
    type: str
  rescue_cmdline:
    description:
      - libvirt only. Kernel command line of the rescue guest. Default is the domain's own.
    type: str
  rescue_disk_mib:
    description:
      - libvirt only. Size of the blank rescue disk made when O(rescue_image) is not given. Default 64.
    type: int
  shutdown_timeout:
    description:
      - libvirt only. Seconds a running guest gets to shut down before a rescue cuts its power.
        Default 60.
    type: int
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Resolves the rescue image and checks that the instance can be rescued; touches nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows whether the instance is rescued before and after.
notes:
  - A shelved, paused or suspended instance is refused with a clear message; nothing is changed.
  - A locked OpenStack server is refused; unlock it with M(vmops.lifecycle.instance_state).
  - On libvirt a domain whose definition holds secrets (a graphics password) is refused, because the
    original definition is kept in metadata that read-only clients can see.
'''

EXAMPLES = r'''
- name: Rescue a server that no longer boots, with a rescue image
  vmops.lifecycle.instance_rescue:
    cloud: production
    instance: web1
    rescue_image: rescue-tools
    admin_password: "{{ vault_rescue_password }}"

- name: Rescue a libvirt domain with a blank rescue disk (direct kernel boot)
  vmops.lifecycle.instance_rescue:
    libvirt_uri: qemu+ssh://kvm3/system
    instance: db2

- name: Back to normal
  vmops.lifecycle.instance_rescue:
    cloud: production
    instance: web1
    state: unrescued
'''

RETURN = r'''
instance:
  description: The instance before and after, and what was done.
  returned: always
  type: dict
  contains:
    state_before:
      description: State before the run (V(rescued) when rescued).
      type: str
    state:
      description: State after the run.
      type: str
    rescued_before:
      description: Whether the instance was rescued before the run.
      type: bool
    rescued:
      description: Whether it is rescued after the run.
      type: bool
    plan:
      description: V([rescue]), V([unrescue]) or empty.
      type: list
      elements: str
    executed:
      description: What was done, with seconds, and on libvirt how the guest was powered off.
      type: list
      elements: dict
    elapsed:
      description: Seconds the run took.
      type: float
rescue:
  description: The rescue in place after the run (in check mode, the one planned).
  returned: always
  type: dict
  contains:
    image:
      description: The rescue image (null for the server's own image or a blank libvirt rescue disk).
      type: str
    stable_device:
      description: Whether the instance's disks keep their device names (a stable-device rescue).
      type: bool
    disks:
      description:
        - The disks as the rescue guest sees them, in order (target, role rescue or original,
          original_target, source). On OpenStack this is the layout Nova documents for the kind of
          rescue, on libvirt the definition itself.
      type: list
      elements: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import (
    RescueRequest, ensure_rescue, validate_rescue_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.rescue import LibvirtRescuer
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.rescue import OpenStackRescuer

DRIVERS = {'openstack': OpenStackRescuer, 'libvirt': LibvirtRescuer}


def main():
    module = new_module(
        dict(
            instance=dict(type='str', required=True, aliases=['name']),
            state=dict(type='str', default='rescued', choices=['rescued', 'unrescued']),
            rescue_image=dict(type='str'),
            admin_password=dict(type='str', no_log=True),
            rescue_kernel=dict(type='str'),
            rescue_initrd=dict(type='str'),
            rescue_cmdline=dict(type='str'),
            rescue_disk_mib=dict(type='int'),
            shutdown_timeout=dict(type='int'),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = RescueRequest(
        identifier=params['instance'], wanted=params['state'], rescue_image=params['rescue_image'],
        admin_password=params['admin_password'], rescue_kernel=params['rescue_kernel'],
        rescue_initrd=params['rescue_initrd'], rescue_cmdline=params['rescue_cmdline'],
        rescue_disk_mib=params['rescue_disk_mib'], shutdown_timeout=params['shutdown_timeout'],
        wait=params['wait'], timeout=params['timeout'])
    return converge_request(module, request, validate_rescue_request, ensure_rescue, DRIVERS)


if __name__ == '__main__':
    main()
