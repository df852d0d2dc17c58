#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_snapshot
short_description: Take, rotate and delete snapshots of an instance (OpenStack or libvirt)
version_added: 0.1.0
description:
  - Takes a snapshot of an instance and waits until it is verified (OpenStack image V(active) and its
    volume snapshots V(available); libvirt backup job finished and every copy checked), or deletes one.
  - Idempotent by name. A verified snapshot of that name of this instance is left as it is. A name used by
    a snapshot of another instance is refused.
  - "OpenStack, image-booted server: Nova's createImage, a Glance image of type snapshot."
  - "OpenStack, volume-backed server: Nova's createImage, which makes a Cinder snapshot of every attached
    volume and a zero-byte image that records them."
  - "OpenStack, image-booted server with O(include_volumes=true): the server is paused, createImage captures
    the system disk and Cinder snapshots of every attached data volume are taken, then the server is
    unpaused: one crash-consistent set. The result says how long the server was paused."
  - "libvirt, running or paused domain: a push-mode backup (virDomainBackupBegin) of every disk into
    O(backup_dir)/<domain>/<name>/: full standalone qcow2 copies, the domain XML (without secrets such as a
    graphics password) and a manifest written last. The guest is not paused; with a connected guest agent its
    file systems are frozen around the start of the job only."
  - "libvirt, where backups live: on the domain's own host by default. With O(backup_uri) they live on another
    libvirt host (in O(backup_dir) or in the directory of O(backup_pool) there), so that they outlive the host
    they protect: the backup is written on the domain's host first and streamed there (sparse). A directory
    every host mounts (NFS) works as well, without O(backup_uri)."
  - "libvirt, stopped domain: an internal snapshot (qcow2 disks), which lives inside the disk. With
    O(backup_uri) on another host, its disk files are copied there instead."
  - With O(series) and O(retention), the newest O(retention) snapshots of the series are kept. Older ones are
    deleted only after the new one is verified, so a run that fails halfway never loses a snapshot. Unlike
    Nova's createBackup rotation, this also works for volume-backed servers and on libvirt.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  instance:
    description:
      - Name or UUID of the server or domain.
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot if it does not exist yet; V(absent) deletes it (on OpenStack also its
        volume snapshots). Deleting a snapshot that does not exist is not an error.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - "Name of the snapshot. Letters, digits, and C(. _ : + -)."
      - Without a name, O(series) is required and the name is V(<series>-<UTC time YYYYmmddTHHMMSSZ>), so every
        run takes a new snapshot.
    type: str
  series:
    description:
      - A series the snapshot belongs to (recorded with it), for O(retention) and for restoring "the newest of
        the series".
    type: str
  retention:
    description:
      - Keep the newest this many complete snapshots of O(series) of this instance, the new one included; delete
        the older ones (after the new one is verified). At least 1. Needs O(series).
    type: int
  include_volumes:
    description:
      - OpenStack, image-booted server with attached data volumes. Also snapshot every attached volume, together
        with the system disk, while the server is paused.
      - Volume-backed servers always get every volume snapshotted, and libvirt backups always hold every disk.
    type: bool
    default: false
  quiesce:
    description:
      - V(auto) freezes the guest's file systems where a guest agent allows it, V(required) fails (before
        anything is done) where that is not possible, V(off) never tries.
      - OpenStack can only quiesce through Nova, for volume-backed servers whose image has
        C(hw_qemu_guest_agent=yes) and C(os_require_quiesce=yes). The result's C(quiesced) says what was achieved.
      - On OpenStack, a guest agent that does not answer makes Nova's C(createImage) of a volume-backed server fail,
        after up to Nova's RPC timeout (60 s by default). V(required) then fails and says so; nothing is left behind.
        V(auto) pauses the server and takes the snapshot crash-consistent instead (C(consistency=paused), the reason
        in C(quiesce_error)); the pause waits on Nova's compute, which stalls while libvirt waits for the agent.
        Either way libvirt may still hold Nova's freeze for the agent, see the quiesce section of docs/instance_snapshot.md.
    type: str
    choices: [auto, required, 'off']
    default: auto
  metadata:
    description:
      - Extra properties (OpenStack image properties) or manifest entries (libvirt) of the snapshot. Keys starting
        with C(vmops_) are reserved.
    type: dict
  backup_dir:
    description:
      - libvirt only. Directory that holds the backups, one directory per domain and per snapshot, on the host
        of O(backup_uri). Reached through libvirt's storage API, so it works with remote URIs.
      - Default C(/var/lib/libvirt/images/vmops-backups). Mutually exclusive with O(backup_pool).
    type: str
  backup_uri:
    description:
      - libvirt only. The libvirt URI of the host whose storage holds the backups. Default the domain's own host
        (O(libvirt_uri)).
      - Another host keeps the backups when the domain's host is lost, and M(vmops.lifecycle.instance_restore)
        finds them there from any host with the same O(backup_uri).
    type: str
  backup_pool:
    description:
      - libvirt only. A storage pool of the host of O(backup_uri) whose directory holds the backups, instead of
        O(backup_dir).
    type: str
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
notes:
  - O(wait=false) is not honoured for O(state=present). A snapshot counts only once it is verified, and retention
    needs that, so the module always waits (up to O(timeout)).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads only, then reports what would be created (kind, disks or volumes) and what retention would delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The snapshot before and after, and the snapshots retention deletes.
'''

EXAMPLES = r'''
- name: Nightly snapshot of web1, keep a week
  vmops.lifecycle.instance_snapshot:
    cloud: production
    instance: web1
    series: web1-nightly
    retention: 7

- name: A consistent snapshot of a server and its data volumes
  vmops.lifecycle.instance_snapshot:
    cloud: production
    instance: db1
    name: db1-before-upgrade
    include_volumes: true

- name: Back up a running libvirt domain without pausing it
  vmops.lifecycle.instance_snapshot:
    libvirt_uri: qemu+ssh://root@hv1/system
    instance: app1
    name: app1-before-upgrade
    backup_dir: /srv/backups

- name: Back up a libvirt domain to another host's storage pool, so that the backup outlives hv1
  vmops.lifecycle.instance_snapshot:
    libvirt_uri: qemu+ssh://root@hv1/system
    instance: app1
    series: app1-nightly
    retention: 7
    backup_uri: qemu+ssh://root@backup1/system
    backup_pool: backups

- name: Delete a snapshot
  vmops.lifecycle.instance_snapshot:
    cloud: production
    instance: db1
    name: db1-before-upgrade
    state: absent
'''

RETURN = r'''
action:
  description: What the run did, V(create), V(delete) or V(none).
  returned: always
  type: str
snapshot:
  description: The snapshot (null after a delete). In check mode, the planned snapshot (C(id) null, C(status) V(planned)).
  returned: always
  type: dict
  contains:
    id:
      description: Glance image ID; libvirt backup directory on the host; V(<domain>/<name>) for an internal snapshot.
      type: str
    name:
      description: Snapshot name.
      type: str
    series:
      description: Its series, or null.
      type: str
    backend:
      description: V(openstack) or V(libvirt).
      type: str
    kind:
      description: V(image), V(volume_backed), V(libvirt_backup) or V(libvirt_internal).
      type: str
    status:
      description: V(active) (OpenStack image), V(available) (libvirt), V(planned) (check mode).
      type: str
    size_bytes:
      description: Bytes stored. Image size plus volume snapshot sizes, or the sum of the backup files.
      type: int
    created_at:
      description: When it was taken (ISO 8601 UTC).
      type: str
    quiesced:
      description: Whether the guest's file systems were frozen for it.
      type: bool
    consistency:
      description: >-
        OpenStack only. V(quiesced), V(paused) (include_volumes, or a quiesce that failed with O(quiesce=auto):
        the server was paused), V(crash) (a running guest), or V(stopped).
      type: str
    quiesce_error:
      description: >-
        OpenStack only. Why a snapshot that was to be quiesced was taken crash-consistent instead (Nova could not
        freeze the guest), or null.
      type: str
    contains:
      description: What it holds, one entry per disk or volume, each with C(device), C(kind), C(id_or_path), C(size_bytes).
      type: list
      elements: dict
    recorded:
      description: >-
        What a relaunch needs. C(instance_id), C(instance_name), C(flavor), C(networks), C(metadata),
        C(key_name) and C(boot) (V(image) or V(volume)).
      type: dict
    store:
      description: libvirt backups. Where the backup lives, C(uri) (without password), C(host) and C(root).
      type: dict
    secrets_removed:
      description: >-
        libvirt backups. What the saved C(domain.xml) leaves out, for example C(graphics vnc passwd). A domain
        defined again from it gets a random graphics password (see M(vmops.lifecycle.instance_restore)).
      type: list
      elements: str
timings:
  description: >-
    C(total_seconds) and C(guest_paused_seconds). The latter is the time the module paused the server or
    froze the guest's file systems. libvirt adds C(backup_begin_seconds), C(copy_seconds) and C(libvirt_calls).
    OpenStack adds C(snapshot_seconds), and for a quiesced volume-backed snapshot C(quiesce_window_seconds),
    from sending C(createImage) until every Cinder snapshot was seen available. Nova reports no freeze times.
    The freeze starts within this window and ends shortly after it, once Nova's compute has seen the same
    snapshots available (it polls every 0.5 s) and thawed the guest; it is an estimate, not a bound.
  returned: always
  type: dict
deleted:
  description: Snapshots deleted by this run (retention, or the one of O(state=absent)); in check mode, those that would be.
  returned: always
  type: list
  elements: dict
instance:
  description: The instance, with C(state) and C(details) after the run and C(before).
  returned: always
  type: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.snapshot import LibvirtSnapshots
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.snapshot import OpenStackSnapshots
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import (
    SnapshotRequest, ensure_snapshot, validate_snapshot_request)

DRIVERS = {'openstack': OpenStackSnapshots, 'libvirt': LibvirtSnapshots}


def main():
    module = new_module(
        dict(
            instance=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            name=dict(type='str'),
            series=dict(type='str'),
            retention=dict(type='int'),
            include_volumes=dict(type='bool', default=False),
            quiesce=dict(type='str', default='auto', choices=['auto', 'required', 'off']),
            metadata=dict(type='dict'),
            backup_dir=dict(type='str'),
            backup_uri=dict(type='str'),
            backup_pool=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = SnapshotRequest(**dict((field, params[field]) for field in SnapshotRequest._fields))
    return converge_request(module, request, validate_snapshot_request, ensure_with_driver, DRIVERS)


def ensure_with_driver(backend, request, check_mode, driver):
    try:
        return ensure_snapshot(driver, request, check_mode=check_mode)
    finally:
        driver.close()


if __name__ == '__main__':
    main()
