#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_restore
short_description: Restore an instance from a snapshot taken by instance_snapshot
version_added: 0.1.0
description:
  - Brings an instance back to the content of a snapshot made by
    M(vmops.lifecycle.instance_snapshot), named by O(snapshot) or chosen as the newest verified
    snapshot of a O(series).
  - On OpenStack the server is rebuilt from the snapshot image. It keeps its ID, ports, key pair
    and metadata. A stopped server stays stopped, as Nova does it. A volume-backed server cannot be
    rebuilt from its snapshot (a set of Cinder volume snapshots); the module refuses it.
  - When the server no longer exists and O(relaunch_missing=true), a new one is launched from the
    snapshot (image-booted or volume-backed) with the flavor, networks, key pair, metadata and
    availability zone recorded in the snapshot. Its name is O(instance).
  - On libvirt the domain's disks are replaced by copies of the backup files (the backup is only
    read). The domain is shut down first, its power cut after O(shutdown_timeout), and a managed
    save image is discarded because its memory belongs to the replaced disks. An internal snapshot
    (of a stopped domain) is reverted. A domain that no longer exists is defined again from the
    backup's C(domain.xml) with O(relaunch_missing=true), on any host, from backups kept on any host
    (O(backup_uri)).
  - On libvirt a backup keeps no graphics password. Each such console of a domain defined again gets a
    random password nobody knows, which the plan shows as C(new_vnc_password) or C(new_spice_password).
    Set a new one to use the console.
  - Idempotent. The instance records the snapshot it was restored from (OpenStack metadata
    C(vmops_restored_from), libvirt domain C(<metadata>)). A restore from the same snapshot again is
    unchanged unless O(force=true).
  - A snapshot of another instance is refused unless O(allow_other_instance=true). So are an
    unknown snapshot and a series without a verified snapshot. Nothing is changed then.
  - A module of its own rather than a state of M(vmops.lifecycle.instance_snapshot). A restore acts
    on the instance and destroys its current disk content, while instance_snapshot only makes and
    deletes snapshots. Keeping them apart keeps a destructive action out of a playbook that only
    meant to take a snapshot, and gives each module its own check mode and diff.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  instance:
    description:
      - Name or UUID of the instance. To relaunch a missing instance, its name.
    type: str
    required: true
    aliases: [name]
  snapshot:
    description:
      - Name or ID of the snapshot. On libvirt, a backup name, an internal snapshot name, or the
        path of a backup directory on the host.
      - Exactly one of O(snapshot) and O(series) is required.
    type: str
  series:
    description:
      - Use the newest verified snapshot of this series.
    type: str
  relaunch_missing:
    description:
      - When the instance does not exist, launch (OpenStack) or define (libvirt) it again from the
        snapshot. Without it a missing instance is an error.
    type: bool
    default: false
  power_state:
    description:
      - V(keep) leaves the instance as the restore leaves it. A running server stays running and a
        stopped one stopped. On libvirt a paused or suspended domain comes back running.
      - V(running) or V(stopped) puts it in that state afterwards.
    type: str
    choices: [keep, running, stopped]
    default: keep
  force:
    description:
      - Restore even if the instance was already restored from this snapshot.
      - On libvirt with O(relaunch_missing), overwrite a disk file still at the recorded path.
    type: bool
    default: false
  allow_other_instance:
    description:
      - Accept a snapshot that was taken of another instance.
    type: bool
    default: false
  availability_zone:
    description:
      - OpenStack relaunch only. Availability zone (admins may give V(zone:host)). Default is the
        zone recorded in the snapshot.
    type: str
  backup_dir:
    description:
      - libvirt only. Directory where instance_snapshot keeps its backups, on the host of O(backup_uri).
        Default C(/var/lib/libvirt/images/vmops-backups). Mutually exclusive with O(backup_pool).
    type: str
  backup_uri:
    description:
      - libvirt only. The libvirt URI of the host whose storage holds the backups, as given to
        M(vmops.lifecycle.instance_snapshot). Default the instance's own host (O(libvirt_uri)).
      - The backups are read from there wherever the domain is now (after a drain), or wherever it is
        defined again (O(relaunch_missing), after its host was lost).
    type: str
  backup_pool:
    description:
      - libvirt only. A storage pool of the host of O(backup_uri) whose directory holds the backups,
        instead of O(backup_dir).
    type: str
  shutdown_timeout:
    description:
      - libvirt only. Seconds a running guest gets to shut down before its power is cut. Default 60.
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
    details: Finds the snapshot and checks the restore can be done, then reports the plan; touches nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the snapshot the instance was restored from, and its state, before and after.
'''

EXAMPLES = r'''
- name: Roll web1 back to its newest nightly snapshot
  vmops.lifecycle.instance_restore:
    cloud: production
    instance: web1
    series: nightly

- name: Bring back a server lost with its host, from a named snapshot
  vmops.lifecycle.instance_restore:
    cloud: production
    instance: db1
    snapshot: db1-nightly-20261120T010000Z
    relaunch_missing: true

- name: Restore a libvirt domain's disk from a backup, and leave it stopped
  vmops.lifecycle.instance_restore:
    libvirt_uri: qemu+ssh://kvm3/system
    instance: app2
    snapshot: before-upgrade
    power_state: stopped

- name: Bring app1 up on kvm4 from its newest backup, kept on backup1, after kvm3 was lost
  vmops.lifecycle.instance_restore:
    libvirt_uri: qemu+ssh://kvm4/system
    instance: app1
    series: app1-nightly
    relaunch_missing: true
    backup_uri: qemu+ssh://root@backup1/system
    backup_pool: backups
'''

RETURN = r'''
action:
  description: V(rebuild), V(relaunch), V(disk_restore) or V(none).
  returned: always
  type: str
snapshot:
  description: The snapshot used, as instance_snapshot returns it (id, name, series, kind, created_at, contains, recorded).
  returned: always
  type: dict
instance:
  description: The instance before and after.
  returned: always
  type: dict
  contains:
    state_before:
      description: State before the run (V(absent) when it was missing).
      type: str
    state:
      description: State after the run.
      type: str
    restored_from_before:
      description: The snapshot the instance was restored from before the run.
      type: str
    restored_from:
      description: The snapshot it is restored from after the run.
      type: str
    plan:
      description: The steps planned.
      type: list
      elements: str
timings:
  description: Seconds per phase (rebuild, launch, power off, disk copy, start) and in total.
  returned: always
  type: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.restore import (
    RestoreRequest, ensure_restored, validate_restore_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.restore import LibvirtRestorer
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.restore import OpenStackRestorer

DRIVERS = {'openstack': OpenStackRestorer, 'libvirt': LibvirtRestorer}


def main():
    module = new_module(
        dict(
            instance=dict(type='str', required=True, aliases=['name']),
            snapshot=dict(type='str'),
            series=dict(type='str'),
            relaunch_missing=dict(type='bool', default=False),
            power_state=dict(type='str', default='keep', choices=['keep', 'running', 'stopped']),
            force=dict(type='bool', default=False),
            allow_other_instance=dict(type='bool', default=False),
            availability_zone=dict(type='str'),
            backup_dir=dict(type='str'),
            backup_uri=dict(type='str'),
            backup_pool=dict(type='str'),
            shutdown_timeout=dict(type='int'),
        ),
        mutually_exclusive=[('snapshot', 'series')],
        required_one_of=[('snapshot', 'series')],
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    params = module.params
    request = RestoreRequest(
        identifier=params['instance'], snapshot=params['snapshot'], series=params['series'],
        relaunch_missing=params['relaunch_missing'], power_state=params['power_state'], force=params['force'],
        allow_other_instance=params['allow_other_instance'], availability_zone=params['availability_zone'],
        backup_dir=params['backup_dir'], backup_uri=params['backup_uri'], backup_pool=params['backup_pool'],
        shutdown_timeout=params['shutdown_timeout'],
        wait=params['wait'], timeout=params['timeout'])
    return converge_request(module, request, validate_restore_request, ensure_restored, DRIVERS)


if __name__ == '__main__':
    main()
