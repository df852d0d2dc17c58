# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore an instance from a snapshot taken by instance_snapshot, on either backend.

OpenStack: rebuild the server from the snapshot image (same ID, ports, metadata, key pair), or,
when the server is gone and relaunch_missing is set, launch a new one from the snapshot with the
flavor, networks and metadata recorded at snapshot time.  libvirt: copy the backup's disk files
back over the domain's disks (or define the domain again from the backup when it is gone).

This file holds what both share: the request, its validation, the choice of the snapshot, the
plan, check mode, the diff and the result.  The backend halves are openstack/restore.py and
libvirt/restore.py; each implements the "restorer" verbs used below.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import StateRequest, ensure_state
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceLocked, InstanceNotFound, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import public
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline

RESTORED_FROM_KEY = 'vmops_restored_from'
POWER_STATES = ('keep', 'running', 'stopped')

# identifier:            name or UUID of the instance
# snapshot / series:     exactly one: a snapshot name or ID, or the series whose newest verified snapshot is used
# relaunch_missing:      launch (OpenStack) or define (libvirt) the instance again when it is gone
# power_state:           keep | running | stopped, after the restore
# force:                 restore even if the instance was already restored from this snapshot
# allow_other_instance:  accept a snapshot that was taken of another instance
# availability_zone:     OpenStack relaunch only: where to launch (default: the zone recorded)
# backup_dir:            libvirt: where instance_snapshot keeps its backups (on the host)
# shutdown_timeout:      libvirt: seconds a running guest gets to shut down before its power is cut
# backup_uri, backup_pool: libvirt: the host that holds the backups (default: the instance's own), and a
#                        storage pool of it instead of backup_dir; both default to None
RestoreRequest = collections.namedtuple(
    'RestoreRequest', 'identifier snapshot series relaunch_missing power_state force allow_other_instance '
                      'availability_zone backup_dir shutdown_timeout wait timeout backup_uri backup_pool')
RestoreRequest.__new__.__defaults__ = (None, None)


def validate_restore_request(model, request):
    if bool(request.snapshot) == bool(request.series):
        raise InvalidRequest('Give exactly one of snapshot (a name or ID) or series (its newest verified snapshot).')
    if request.power_state not in POWER_STATES:
        raise InvalidRequest('power_state must be one of %s.' % ', '.join(POWER_STATES))
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)
    if model.name == 'openstack':
        given = [name for name in ('backup_dir', 'shutdown_timeout', 'backup_uri', 'backup_pool')
                 if getattr(request, name) is not None]
        if given:
            raise InvalidRequest('%s only apply to the libvirt backend.' % ', '.join(given))
    else:
        if request.availability_zone is not None:
            raise InvalidRequest('availability_zone only applies to the openstack backend.')
    if request.availability_zone is not None and not request.relaunch_missing:
        raise InvalidRequest('availability_zone is only used to relaunch a missing server; set relaunch_missing.')
    if request.shutdown_timeout is not None and request.shutdown_timeout <= 0:
        raise InvalidRequest('shutdown_timeout must be a positive number of seconds.')
    if request.backup_dir is not None and not request.backup_dir.startswith('/'):
        raise InvalidRequest('backup_dir must be an absolute path on the hypervisor host.')
    if request.backup_dir is not None and request.backup_pool is not None:
        raise InvalidRequest('backup_dir and backup_pool both say where the backups live: give one of them.')


def ensure_restored(backend, request, check_mode=False, restorer=None):
    """Converge one instance to "restored from this snapshot"; returns the module result.

    The restorer implements:
      find(identifier)                       -> ref or None
      status(ref)                            -> InstanceStatus (read-only)
      snapshot(ref, request)                 -> the snapshot record (InvalidRequest: unknown, not verified)
      owner(record)                          -> the instance ID the snapshot was taken of (None: unknown)
      plan_restore(ref, status, record, request)  -> dict (refuses what cannot be done; reads only)
      restore(ref, status, record, plan, request, deadline) -> (InstanceStatus after, timings)
      plan_relaunch(record, request)         -> dict (reads only)
      relaunch(record, plan, request, deadline)   -> (InstanceStatus after, timings)
      close()
    """
    validate_restore_request(backend.model, request)
    try:
        return _ensure(backend, restorer, request, check_mode)
    finally:
        restorer.close()


def _ensure(backend, restorer, request, check_mode):
    deadline = Deadline(request.timeout)
    ref = restorer.find(request.identifier)
    if ref is None and not request.relaunch_missing:
        raise InstanceNotFound("No instance '%s' at %s; set relaunch_missing=true to launch it again from the "
                               "snapshot." % (request.identifier, backend.location()),
                               identifier=request.identifier, location=backend.location())
    before = restorer.status(ref) if ref is not None else None
    record = restorer.snapshot(ref, request)
    owner = restorer.owner(record)
    own_id = before.id if before is not None else None
    own_ids = (own_id, before.details.get('lineage')) if before is not None else ()
    if own_id is not None and owner is not None and owner not in own_ids and not request.allow_other_instance:
        raise InvalidRequest('Snapshot %s was taken of another instance (%s), not of %s (%s); set '
                             'allow_other_instance=true to restore it anyway. Nothing was changed.'
                             % (record['name'], owner, before.name, own_id), snapshot_owner=owner)
    if before is None and owner is not None and request.identifier not in (
            owner, (record.get('recorded') or {}).get('instance_name')) and not request.allow_other_instance:
        raise InvalidRequest('Snapshot %s was taken of %s, not of %s; set allow_other_instance=true to launch %s '
                             'from it anyway. Nothing was changed.'
                             % (record['name'], (record.get('recorded') or {}).get('instance_name') or owner,
                                request.identifier, request.identifier))

    if before is not None:
        already = before.restored_from == record['id']
        if already and not request.force:
            plan = restorer.plan_power(ref, before, request)
            action = 'none'
        else:
            plan = restorer.plan_restore(ref, before, record, request)
            action = plan['action']
        if action != 'none' and before.locked:
            raise InstanceLocked('%s is locked (reason: %s); nothing was done. Unlock it first '
                                 '(vmops.lifecycle.instance_state locked=false).'
                                 % (before.name, before.locked_reason or 'none given'))
    else:
        plan = restorer.plan_relaunch(record, request)
        action = 'relaunch'

    changed = action != 'none' or bool(plan.get('power'))
    after, timings = before, {}
    if changed and not check_mode:
        started = time.monotonic()
        try:
            if action == 'relaunch':
                after, timings = restorer.relaunch(record, plan, request, deadline)
            elif action != 'none':
                after, timings = restorer.restore(ref, before, record, plan, request, deadline)
            else:
                after, timings = restorer.power(ref, before, plan, request, deadline)
        except VmopsError as error:
            error.details.setdefault('action', action)
            error.details.setdefault('snapshot', public(record))
            raise
        timings['total_seconds'] = round(time.monotonic() - started, 3)
    return {
        'changed': changed,
        'action': action,
        'snapshot': _snapshot_facts(record),
        'instance': _instance(backend, restorer, before, after, plan, action, deadline, check_mode),
        'timings': timings,
        'diff': {'before': {'exists': before is not None,
                            'restored_from': before.restored_from if before else None,
                            'state': before.state if before else 'absent'},
                 'after': {'exists': True, 'restored_from': record['id'],
                           'state': plan.get('state_after') or (before.state if before else 'running')}},
    }


# What a restorer reads about an instance.
InstanceStatus = collections.namedtuple('InstanceStatus', 'name id state restored_from locked locked_reason details')


def _snapshot_facts(record):
    facts = public(record)
    for key in ('manifest',):
        facts.pop(key, None)
    return facts


def _instance(backend, restorer, before, after, plan, action, deadline, check_mode):
    seen = after or before
    instance = {
        'name': seen.name if seen else plan.get('name'), 'id': seen.id if seen else None,
        'backend': backend.model.name, 'location': backend.location(),
        'state_before': before.state if before else 'absent',
        'state': (seen.state if seen else 'absent') if not check_mode else (before.state if before else 'absent'),
        'restored_from_before': before.restored_from if before else None,
        'restored_from': seen.restored_from if seen else None,
        'plan': plan.get('steps', []), 'elapsed': round(deadline.elapsed(), 3),
        'details': dict(seen.details) if seen else {},
    }
    if plan.get('request_body') is not None and check_mode:
        instance['request_body'] = plan['request_body']
    count = restorer.request_count()
    if count is not None:
        instance['api_requests'] = count
    return instance


class Restorer(abc.ABC):
    """The backend half of instance_restore (openstack/restore.py, libvirt/restore.py), with the
    power_state handling both share: the engine's graceful plan to running or stopped."""

    backend = None

    @classmethod
    def for_request(cls, backend, request):     # pylint: disable=unused-argument
        """The driver for this run (over the backend's one connection)."""
        return cls(backend)

    def find(self, identifier):
        """ref or None: the backend's own look-up."""
        return self.backend.find(identifier)

    @abc.abstractmethod
    def status(self, ref, /):
        """InstanceStatus (read-only)."""

    @abc.abstractmethod
    def snapshot(self, ref, request, /):
        """The snapshot record (InvalidRequest: unknown, not verified)."""

    @abc.abstractmethod
    def owner(self, record, /):
        """The instance ID the snapshot was taken of (None: unknown)."""

    @abc.abstractmethod
    def plan_restore(self, ref, before, record, request, /):
        """dict; refuses what cannot be done; reads only."""

    @abc.abstractmethod
    def restore(self, ref, before, record, plan, request, deadline, /):
        """(InstanceStatus after, timings)."""

    @abc.abstractmethod
    def plan_relaunch(self, record, request, /):
        """dict; reads only."""

    @abc.abstractmethod
    def relaunch(self, record, plan, request, deadline, /):
        """(InstanceStatus after, timings)."""

    def request_count(self):
        return self.backend.request_count()

    def close(self):
        """Release what the driver opened (the backend's connection is closed by its owner): the
        snapshot driver it reads snapshots through."""
        snapshots = getattr(self, 'snapshots', None)
        if snapshots is not None:
            snapshots.close()

    def wanted_power(self, state_before, request):
        """The power state wanted after the restore: None to leave it as the restore leaves it."""
        if request.power_state == 'keep':
            return None
        return request.power_state

    def plan_power(self, ref, before, request):
        wanted = self.wanted_power(before.state, request)
        if wanted is None or before.state == wanted:
            return {'power': None, 'steps': [], 'state_after': before.state}
        return {'power': wanted, 'steps': ['power_%s' % wanted], 'state_after': wanted}

    def power(self, ref, before, plan, request, deadline):
        started = time.monotonic()
        self.set_power(before.id, plan['power'], request, deadline)
        return self.status(self.find(before.id)), {'power_seconds': round(time.monotonic() - started, 3)}

    def set_power(self, identifier, wanted, request, deadline):
        """Bring the instance to running or stopped through the engine (graceful, waited on)."""
        remaining = max(1, int(deadline.remaining()))
        return ensure_state(self.backend, StateRequest(
            identifier=identifier, wanted=wanted, hard=False, reboot_type=None, shutdown_timeout=None,
            force_fallback=False, wait=True, timeout=remaining))
