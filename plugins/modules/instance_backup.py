#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: instance_backup
short_description: Incremental backups of an instance in chains (full, then increments), and their restore
version_added: 0.1.0
description:
  - Takes a backup point of an instance, every disk at one moment. A point is V(full) or V(incremental) (only what
    changed since its parent point). A full and the increments built on it form a chain; O(series) names the
    chains of one schedule.
  - "Chain rules: O(mode=auto) takes an increment on the newest complete point of the series, and a full when
    the series has none, when the chain of that point is broken (a link missing or incomplete, or on libvirt its
    checkpoint missing on the domain's host, for example after a move that could not carry it; a live move by
    M(vmops.lifecycle.host_evacuate) carries it), or when its chain already holds
    O(full_every) points. The result's C(why) says which."
  - "Retention keeps the newest O(retention) complete points and every point one of them depends on; it
    deletes the rest, never the parent of a kept point, and only after the new point is verified. A chain is
    only cut by a new full. Older incomplete points (left by a failed run) are deleted too."
  - O(state=restored) restores a point (its full and every increment up to it, assembled in order and checked)
    into a new instance (O(restore_as)) or, on libvirt only, into the stopped instance itself.
  - "libvirt: the domain must be running or paused, and every disk qcow2 compat 1.1 (checkpoints are QEMU
    persistent dirty bitmaps; a compat 0.10 disk is refused, named, with nothing changed). Each point is a
    push-mode backup job that also creates a libvirt checkpoint of the same name; an increment is written into
    a qcow2 whose backing file is the parent's copy, so only changed clusters are stored. Points live in the
    backup store, O(backup_dir)/<domain>/<point>/, with a manifest written last."
  - "libvirt restore: one conversion of the point's image chain on the store's host onto a new standalone
    qcow2 per disk (beside the domain's disks), checked (virtual size, format, no backing file). With
    O(restore_as) a new domain is defined from the point's definition (new name and UUID, new MAC addresses),
    not started. Into the domain itself: it must be stopped; its checkpoints are dropped, so the next point is
    a full."
  - "OpenStack: a point is one cinder-backup backup of every volume of the server (incremental backups are RBD
    diffs with the Ceph backup driver), the server's record kept in the backups' metadata. An image-booted
    server's point adds a Glance snapshot image of its system disk (Nova createImage, as
    M(vmops.lifecycle.instance_snapshot) makes), which is always a full copy and part of no chain, to the
    backups of its data volumes; one without a data volume is refused (use M(vmops.lifecycle.instance_snapshot))."
  - "OpenStack restore always makes a new server (O(restore_as) is required): new volumes are restored from the
    backups, and the server is launched from them (an image-booted point boots from its image, the data
    volumes attached) with the flavor, networks, metadata, key pair and zone recorded at backup time.
    Restoring into the server's own volumes is refused, because Cinder restores a backup only into an
    available (detached) volume and a server's boot volume cannot be detached."
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
      - V(present) takes a point (with O(name), only when no complete point of that name exists).
      - V(restored) restores O(point) of O(series).
    type: str
    choices: [present, restored]
    default: present
  series:
    description:
      - The series the points belong to (letters, digits, C(. _ -)). Chains never cross series.
    type: str
    required: true
  name:
    description:
      - Name of the new point. Without it the name is V(<series>-<UTC time to the millisecond>), and every run
        takes a new point. With it, a complete point of that name makes the run a no-op (retention still applies).
    type: str
  point:
    description:
      - With O(state=restored), the point to restore, by name, or V(latest) (the newest complete point).
    type: str
  mode:
    description:
      - V(auto) chooses by the chain rules above; V(full) always takes a full; V(incremental) takes an increment
        on the newest complete point and is refused (nothing changed) when there is no usable one.
    type: str
    choices: [auto, full, incremental]
    default: auto
  full_every:
    description:
      - With O(mode=auto), a chain holds at most this many points (the full included) before a new full starts.
    type: int
    default: 7
  retention:
    description:
      - Complete points to keep (the new one counts), chain-aware as described above. Unset, nothing is deleted.
    type: int
  quiesce:
    description:
      - libvirt, as in M(vmops.lifecycle.instance_snapshot). V(auto) freezes the guest's file systems around the
        start of the backup when a guest agent answers, else takes a crash-consistent point (and says why in
        C(point.quiesce_error)); V(required) refuses without an agent, and fails with nothing started when the
        agent does not answer within 5 seconds (no freeze is then sent) or does not freeze within 20; V(off)
        never freezes. A thaw that fails is tried three times; a guest still frozen after that fails the run with
        the command that thaws it.
      - OpenStack. Nova freezes a guest only for its own image snapshots, so V(required) is refused. V(auto)
        pauses a server with several disks (volumes, or an image-booted system disk and its data volumes), so
        that every disk holds one moment, until every volume's backup is available and Nova's image snapshot
        task has ended (Nova refuses to unpause before); a one-volume server is not paused. V(off) never pauses,
        so each disk has its own moment.
    type: str
    choices: [auto, required, 'off']
    default: auto
  restore_as:
    description:
      - With O(state=restored), the name of a new instance made from the point. Unset, the point is restored
        into the instance itself, which must be stopped (libvirt only; on OpenStack O(restore_as) is required).
    type: str
  backup_dir:
    description:
      - libvirt only. Directory of the backup store on the domain's host (as M(vmops.lifecycle.instance_snapshot)).
      - Default C(/var/lib/libvirt/images/vmops-backups). Mutually exclusive with O(backup_pool).
    type: str
  backup_uri:
    description:
      - libvirt only. The host of the backup store. Chains are written on the domain's own host (or a directory
        every host mounts), so another host is refused for now.
    type: str
  backup_pool:
    description:
      - libvirt only. A storage pool whose directory holds the store, instead of O(backup_dir).
    type: str
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
  - vmops.lifecycle.wait
notes:
  - The module always waits for a point to be verified (up to O(timeout)); O(wait=false) is not honoured.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads only, then reports the point it would take (kind, parent, why, disks) and what retention would
      delete, or the chain a restore would assemble.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The names of the series' points before and after.
'''

EXAMPLES = r'''
- name: Nightly backup of app1, a full every 7 points, keep 14 points (and whatever they depend on)
  vmops.lifecycle.instance_backup:
    libvirt_uri: qemu+ssh://root@hv1/system
    instance: app1
    series: nightly
    full_every: 7
    retention: 14

- name: Restore the newest point of app1 as a new domain
  vmops.lifecycle.instance_backup:
    libvirt_uri: qemu+ssh://root@hv1/system
    instance: app1
    series: nightly
    state: restored
    point: latest
    restore_as: app1-restored
'''

RETURN = r'''
action:
  description: V(backup), V(restore), V(retention) (only old points deleted) or V(none).
  returned: always
  type: str
point:
  description: The point taken (C(status) V(planned) in check mode), found, or restored.
  returned: always
  type: dict
  contains:
    name:
      description: Point name.
      type: str
    kind:
      description: V(full) or V(incremental).
      type: str
    parent:
      description: Name of the point it builds on; null for a full.
      type: str
    taken_at:
      description: ISO 8601 UTC time of the point.
      type: str
    complete:
      description: Whether its record was written (last, after every disk was checked).
      type: bool
    disks:
      description: Per disk, C(device), C(file), C(size) (virtual bytes) and C(bytes_written) (bytes the point's
        file holds) on libvirt; on OpenStack C(device), C(kind) (V(volume_backup), or V(image) for an
        image-booted server's system disk, then with C(image_id) and C(full_copy) true), C(volume_id),
        C(backup_id), C(status), C(incremental), C(size_bytes) and C(bytes_written) (the image's bytes; null for
        a backup, whose RBD diff size Cinder does not report).
      type: list
      elements: dict
    boot:
      description: OpenStack only. V(volume) or V(image) (the system disk is the Glance image C(system_image)).
      type: str
    system_image:
      description: OpenStack only. The Glance image of an image-booted server's system disk, a full copy; else null.
      type: str
    quiesced:
      description: V(frozen) or V(crash-consistent) (libvirt); V(paused), V(crash-consistent) or V(stopped) (OpenStack).
      type: str
    guest_frozen_ms:
      description: libvirt only. How long the guest's file systems were frozen, from the freeze request to the
        thaw's answer (the guest's own frozen time is shorter); null when it was not frozen.
      type: float
    frozen_filesystems:
      description: libvirt only. How many file systems the guest agent froze.
      type: int
    quiesce_error:
      description: libvirt only. Why a point with O(quiesce=auto) is crash-consistent although the domain has a
        guest agent (the agent's error), else null.
      type: str
    checkpoint:
      description: libvirt only. The checkpoint created with the point.
      type: str
    host_writeback:
      description:
        - libvirt only, for a point just taken, when the libvirt URI names no host (the module runs on the
          hypervisor); else null. The host's dirty-page writeback threshold C(threshold_bytes), the C(setting) it
          comes from, C(tuned) (at most 256 MiB) and C(advice) when it is not.
        - QEMU flushes whatever the kernel has not yet written of a backup when the job ends, holding its global
          lock, so the guest stalls for that long; a lower threshold lets the kernel write the backup out while it
          is copied (measured on a 1 GiB full, 221 ms against 38 ms with C(vm.dirty_background_bytes=67108864)).
      type: dict
why:
  description: Why this kind of point was taken (or why nothing was done).
  returned: always
  type: str
points:
  description: Names of the series' points after the run, oldest first.
  returned: always
  type: list
  elements: str
deleted:
  description: Points retention deleted (or would delete in check mode), each with C(why).
  returned: always
  type: list
  elements: dict
kept:
  description: Names of the points retention kept.
  returned: always
  type: list
  elements: str
chain:
  description: With O(state=restored), the points assembled, full first.
  returned: when state is restored
  type: list
  elements: str
restored:
  description: With O(state=restored), what was made (disks with path, virtual size and allocation; the new
    domain's UUID).
  returned: when state is restored
  type: dict
steps:
  description: Each step sent (take, verify, delete, restore), with C(done) false for one that failed.
  returned: always
  type: list
  elements: dict
timings:
  description: C(total_seconds) of the run.
  returned: always
  type: dict
instance:
  description: The instance after the run, with C(before).
  returned: always
  type: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import (
    converge_request, new_module, run_module)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.incremental import LibvirtBackupSets
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backup_sets import CinderBackupSets
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backup_chain import (
    BackupRequest, BackupRun, validate_backup_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest

DRIVERS = {'openstack': CinderBackupSets, 'libvirt': LibvirtBackupSets}


def main():
    module = new_module(
        dict(
            instance=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'restored']),
            series=dict(type='str', required=True),
            name=dict(type='str'),
            point=dict(type='str'),
            mode=dict(type='str', default='auto', choices=['auto', 'full', 'incremental']),
            full_every=dict(type='int', default=7),
            retention=dict(type='int'),
            quiesce=dict(type='str', default='auto', choices=['auto', 'required', 'off']),
            restore_as=dict(type='str'),
            backup_dir=dict(type='str'),
            backup_uri=dict(type='str'),
            backup_pool=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


def converge(module):
    request = BackupRequest(**dict((field, module.params[field]) for field in BackupRequest._fields))
    return converge_request(module, request, validate, ensure, DRIVERS)


def validate(model, request):
    if model.name not in DRIVERS:
        raise InvalidRequest('instance_backup works with the %s backend in this build; this run points at %s.'
                             % (' and '.join(sorted(DRIVERS)), model.name))
    validate_backup_request(model, request)


def ensure(backend, request, check_mode, sets):
    try:
        return BackupRun(sets, request, check_mode=check_mode).result()
    finally:
        sets.close()


if __name__ == '__main__':
    main()
