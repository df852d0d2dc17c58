#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_launch
short_description: Launch a server (OpenStack) or a domain (libvirt) that does not exist yet
version_added: 0.1.0
description:
  - Creates a server from an image, from a snapshot (of an image-booted or a volume-backed server),
    or booted from a Cinder volume, and waits until it is ACTIVE.
  - Idempotent by name. A server of that name that already exists is left as it is, whatever its
    spec, and reported. Use M(vmops.lifecycle.instance_state) for its power state and
    M(vmops.lifecycle.instance_resize) for its flavor.
  - This is how a disaster-recovery playbook re-launches instances lost with their host.
  - A launch that ends in ERROR (no valid host, say) fails at once with Nova's fault message. The
    failed server is then deleted, unless O(keep_failed=true), so that nothing is left broken.
  - On libvirt, a domain from a base disk image (O(image), its path on the host, in a storage pool), copied or
    overlaid (O(disk_mode)) through the storage API, with O(memory_mib), O(vcpus) and one NIC per libvirt network of
    O(networks); defined, then started. A domain of that name that exists is left as it is.
  - A module of its own rather than a state of M(vmops.lifecycle.instance_state). Creating needs a
    whole specification (source, flavor, networks, volumes, key, metadata) that means nothing for
    any other state.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  name:
    description:
      - Name of the server. It must be unique in the project for the module to be idempotent.
    type: str
    required: true
  image:
    description:
      - Name or ID of the Glance image to boot from. Exactly one of O(image), O(snapshot) and
        O(volume) is required.
      - On libvirt, required, the path of the base disk image as the host sees it (a volume of one of its pools).
    type: str
  snapshot:
    description:
      - Name or ID of a snapshot image (C(image_type=snapshot)) to boot from.
      - The snapshot of a volume-backed server is a zero-byte image that records Cinder snapshots;
        Nova then creates the new server's volumes from them.
    type: str
  volume:
    description:
      - Name or ID of a bootable Cinder volume to boot from, as it is.
    type: str
  boot_volume_size:
    description:
      - With O(image) or O(snapshot), boot from a new Cinder volume of this many GB created from
        it (boot from volume), instead of from an ephemeral disk.
    type: int
  delete_volume_on_termination:
    description:
      - Whether Nova deletes the boot volume when the server is deleted.
    type: bool
    default: false
  flavor:
    description:
      - Name or ID of the flavor. Required on OpenStack.
    type: str
  memory_mib:
    description:
      - libvirt only, required. Memory of the domain in MiB.
    type: int
  vcpus:
    description:
      - libvirt only, required. Number of virtual CPUs.
    type: int
  disk_mode:
    description:
      - libvirt only. V(overlay) makes the domain's disk a qcow2 overlay on O(image) (instant; the base must stay).
        V(copy) makes a full copy of it, in its format.
      - The disk is C(<name>.qcow2) (C(<name>.img) for a copy of a raw base) in O(pool).
      - Default V(overlay).
    type: str
    choices: [copy, overlay]
  domain_type:
    description:
      - libvirt only. The domain type. V(qemu) emulates the CPU, for hosts without usable KVM. Default V(kvm).
    type: str
    choices: [kvm, qemu]
  pool:
    description:
      - libvirt only. The storage pool the domain's disk is made in. Default the pool of O(image).
    type: str
  networks:
    description:
      - Names or IDs of the networks to attach, one port each. Empty lets Nova choose (V(auto)).
      - On libvirt, names of libvirt networks, one virtio NIC each; empty gives no NIC.
    type: list
    elements: str
    default: []
  key_name:
    description:
      - Name of a key pair to inject.
    type: str
  metadata:
    description:
      - Server metadata (string keys and values).
    type: dict
  availability_zone:
    description:
      - Availability zone; admins may name a host as V(zone:host).
    type: str
  keep_failed:
    description:
      - Keep a server whose launch ended in ERROR, for inspection, instead of deleting it.
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
    details: Resolves every name (a bad one fails), then reports the request it would send.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows whether the server exists before and after.
'''

EXAMPLES = r'''
- name: A libvirt domain from a base image, as an overlay
  vmops.lifecycle.instance_launch:
    libvirt_uri: qemu+ssh://root@kvm4/system
    name: web3
    image: /var/lib/libvirt/images/debian-12-base.qcow2
    memory_mib: 2048
    vcpus: 2
    networks: [default]

- name: Re-launch a lost instance from its newest snapshot
  vmops.lifecycle.instance_launch:
    cloud: production
    name: web1
    snapshot: web1-nightly-2026-11-20
    flavor: m1.small
    networks: [frontend]
    metadata:
      role: web

- name: Launch a server that boots from a new 20 GB volume made from an image
  vmops.lifecycle.instance_launch:
    cloud: production
    name: db2
    image: debian-12
    boot_volume_size: 20
    flavor: m1.large
    networks: [backend]
'''

RETURN = r'''
instance:
  description: The server (the existing one, or the one launched).
  returned: always
  type: dict
  contains:
    id:
      description: Server ID (null in check mode when it would be created).
      type: str
    state:
      description: State after the run.
      type: str
    plan:
      description: V([create]) when the server is (or would be) created, else empty.
      type: list
      elements: str
    api_requests:
      description: HTTP requests this run sent to the cloud.
      type: int
    details:
      description: Nova status, task state, host (admin only), flavor, lock.
      type: dict
request_body:
  description: In check mode, the server-create request that would be sent (names resolved to IDs).
  returned: check mode, when the server would be created
  type: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.launch import (
    LaunchRequest, ServerCreate, ensure_launched, validate_launch_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.launch import LibvirtLauncher

LAUNCHERS = {'openstack': ServerCreate, 'libvirt': LibvirtLauncher}


def main():
    module = new_module(
        dict(
            name=dict(type='str', required=True),
            image=dict(type='str'),
            snapshot=dict(type='str'),
            volume=dict(type='str'),
            boot_volume_size=dict(type='int'),
            delete_volume_on_termination=dict(type='bool', default=False),
            flavor=dict(type='str'),
            memory_mib=dict(type='int'),
            vcpus=dict(type='int'),
            disk_mode=dict(type='str', choices=['copy', 'overlay']),
            domain_type=dict(type='str', choices=['kvm', 'qemu']),
            pool=dict(type='str'),
            networks=dict(type='list', elements='str', default=[]),
            key_name=dict(type='str', no_log=False),
            metadata=dict(type='dict'),
            availability_zone=dict(type='str'),
            keep_failed=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = LaunchRequest(**dict((field, params[field]) for field in LaunchRequest._fields))
    return converge_request(module, request, validate_launch_request, ensure_launched, drivers=LAUNCHERS)


if __name__ == '__main__':
    main()
