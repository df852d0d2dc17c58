# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rescue and unrescue an instance, on either backend: plan from reads, then act.

A rescue boots the instance from a rescue disk with its own disks attached behind it, so an
operator can repair a guest that no longer boots.  The backend-specific work lives in
openstack_rescue.py (Nova's rescue API) and libvirt_rescue.py (the same thing done by hand on a
libvirt domain); this file holds what both share: the request, its validation, the plan, check
mode, the diff and the result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceLocked, InstanceNotFound, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline

RESCUED = 'rescued'
UNRESCUED = 'unrescued'

# identifier:          name or UUID of the instance
# wanted:              'rescued' or 'unrescued'
# rescue_image:        OpenStack image name/ID; libvirt: path (as the host sees it) of a disk image
#                      the rescue disk is made from (a qcow2 overlay on it; the image is never written)
# admin_password:      OpenStack only; never logged, never returned
# rescue_kernel, rescue_initrd, rescue_cmdline: libvirt direct kernel boot of the rescue guest
# rescue_disk_mib:     libvirt: size of the blank rescue disk made when no rescue_image is given
# shutdown_timeout:    libvirt: seconds a running guest gets to shut down before its power is cut
RescueRequest = collections.namedtuple(
    'RescueRequest', 'identifier wanted rescue_image admin_password rescue_kernel rescue_initrd rescue_cmdline '
                     'rescue_disk_mib shutdown_timeout wait timeout')

LIBVIRT_ONLY = ('rescue_kernel', 'rescue_initrd', 'rescue_cmdline', 'rescue_disk_mib', 'shutdown_timeout')
OPENSTACK_ONLY = ('admin_password',)


def validate_rescue_request(model, request):
    """Refuse bad or contradictory input before anything is contacted."""
    if request.wanted not in (RESCUED, UNRESCUED):
        raise InvalidRequest('state must be rescued or unrescued, not %s.' % request.wanted)
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)
    foreign = LIBVIRT_ONLY if model.name == 'openstack' else OPENSTACK_ONLY
    given = [name for name in foreign if getattr(request, name) is not None]
    if given:
        raise InvalidRequest('%s only apply to the %s backend, not to %s.'
                             % (', '.join(given), 'openstack' if model.name != 'openstack' else 'libvirt',
                                model.name))
    if request.wanted == UNRESCUED:
        rescue_only = [name for name in ('rescue_image', 'admin_password') + LIBVIRT_ONLY
                       if getattr(request, name) is not None]
        if rescue_only:
            raise InvalidRequest('%s only apply to state=rescued.' % ', '.join(rescue_only))
    if request.rescue_initrd is not None and request.rescue_kernel is None:
        raise InvalidRequest('rescue_initrd needs rescue_kernel.')
    if request.rescue_disk_mib is not None and request.rescue_disk_mib <= 0:
        raise InvalidRequest('rescue_disk_mib must be a positive number of MiB.')
    if request.rescue_disk_mib is not None and request.rescue_image is not None:
        raise InvalidRequest('rescue_disk_mib sizes the blank rescue disk made when there is no rescue_image; '
                             'give one or the other.')
    if request.shutdown_timeout is not None and request.shutdown_timeout <= 0:
        raise InvalidRequest('shutdown_timeout must be a positive number of seconds.')


class Rescuer(abc.ABC):
    """The backend half of instance_rescue (openstack/rescue.py, libvirt/rescue.py)."""

    @classmethod
    def for_request(cls, backend, request):     # pylint: disable=unused-argument
        """The driver for this run (over the backend's one connection).  The verbs' arguments are
        positional: each backend names them in its own words (a server id, a libvirt domain)."""
        return cls(backend)

    @abc.abstractmethod
    def settled(self, ref, deadline, /):
        """RescueStatus once the instance is not busy (waits within deadline)."""

    @abc.abstractmethod
    def safe_status(self, ref, /):
        """RescueStatus, or None when it cannot be read (used while reporting a failure)."""

    @abc.abstractmethod
    def prepare(self, ref, status, request, /):
        """What the rescue needs (names resolved, checks done); InvalidRequest when it cannot be done."""

    @abc.abstractmethod
    def check_unrescuable(self, ref, status, /):
        """InvalidRequest when the rescued instance cannot be unrescued as it is."""

    @abc.abstractmethod
    def rescue(self, ref, status, prepared, request, deadline, /):
        """Rescue; returns the RescueStatus after (the rescue guest runs)."""

    @abc.abstractmethod
    def unrescue(self, ref, status, request, deadline, /):
        """Unrescue; returns the RescueStatus after."""


def ensure_rescue(backend, request, check_mode=False, rescuer=None):
    """Converge one instance to rescued or unrescued; returns the module result.

    `rescuer` implements, for the backend:
      status(ref)                       -> RescueStatus (read-only)
      prepare(ref, status, request)     -> dict describing the rescue to do (resolves names, checks
                                           that the instance can be rescued; raises InvalidRequest)
      rescue(ref, status, prepared, deadline) -> RescueStatus after (the rescue guest runs)
      unrescue(ref, status, request, deadline) -> RescueStatus after
    """
    validate_rescue_request(backend.model, request)
    deadline = Deadline(request.timeout)
    ref = backend.find(request.identifier)
    if ref is None:
        raise InstanceNotFound("No instance '%s' at %s." % (request.identifier, backend.location()),
                               identifier=request.identifier, location=backend.location())
    before = rescuer.settled(ref, deadline)
    prepared = None
    if request.wanted == RESCUED and not before.rescued:
        prepared = rescuer.prepare(ref, before, request)      # refuses what cannot be rescued, touching nothing
        plan = ['rescue']
    elif request.wanted == UNRESCUED and before.rescued:
        rescuer.check_unrescuable(ref, before)
        plan = ['unrescue']
    else:
        plan = []
    if plan and before.locked:
        raise InstanceLocked('%s is locked (reason: %s); nothing was done. Unlock it first '
                             '(vmops.lifecycle.instance_state locked=false).'
                             % (before.name, before.locked_reason or 'none given'), plan=plan)
    executed = []
    after = before
    if plan and not check_mode:
        started = time.monotonic()
        record = {'verb': plan[0]}
        executed.append(record)
        try:
            if plan[0] == 'rescue':
                after = rescuer.rescue(ref, before, prepared, request, deadline)
            else:
                after = rescuer.unrescue(ref, before, request, deadline)
        except VmopsError as error:
            record['seconds'] = round(time.monotonic() - started, 3)
            error.details.setdefault('instance', _instance(backend, before, rescuer.safe_status(ref), plan,
                                                           executed, deadline))
            raise
        record['seconds'] = round(time.monotonic() - started, 3)
        record.update(after.steps or {})
    result = {
        'changed': bool(plan),
        'instance': _instance(backend, before, after, plan, executed, deadline),
        'rescue': _rescue_facts(before, after, prepared, plan, check_mode),
        'diff': {'before': {'rescued': before.rescued},
                 'after': {'rescued': request.wanted == RESCUED}},
    }
    return result


# What a rescuer reads about an instance.
#   rescued:     True when the instance runs (or is defined to run) its rescue boot
#   state:       the core's state name (running, stopped, rescued, shelved ...)
#   name, id, locked, locked_reason, details: as in an Observation
#   image, stable_device, disks: the current rescue, when rescued (else None / [])
#   steps:       after an action, what it did (e.g. {'power_off': 'shutdown'}), merged into `executed`
_STATUS_FIELDS = 'name id state rescued locked locked_reason details image stable_device disks steps'


class RescueStatus(collections.namedtuple('RescueStatus', _STATUS_FIELDS)):
    __slots__ = ()

    def __new__(cls, name, id, state, rescued, locked=False, locked_reason=None, details=None,  # pylint: disable=redefined-builtin
                image=None, stable_device=None, disks=None, steps=None):
        return super(RescueStatus, cls).__new__(cls, name, id, state, rescued, locked, locked_reason,
                                                details or {}, image, stable_device, disks or [], steps)


def _instance(backend, before, after, plan, executed, deadline):
    seen = after or before
    instance = {
        'name': seen.name, 'id': seen.id, 'backend': backend.model.name, 'location': backend.location(),
        'state_before': before.state, 'state': after.state if after else 'unknown',
        'rescued_before': before.rescued, 'rescued': after.rescued if after else None,
        'plan': plan, 'executed': executed, 'elapsed': round(deadline.elapsed(), 3),
        'details': dict(seen.details),
    }
    if backend.request_count() is not None:
        instance['api_requests'] = backend.request_count()
    return instance


def _rescue_facts(before, after, prepared, plan, check_mode):
    """The `rescue` return value: the rescue in place after the run (or, in check mode, the one planned)."""
    if plan == ['rescue']:
        # What was asked and prepared (also when not waited on, before Nova reports RESCUE).
        facts = {'image': prepared.get('image_name') or prepared.get('image'),
                 'stable_device': prepared.get('stable_device'), 'disks': prepared.get('disks', [])}
        if check_mode:
            facts['planned'] = True
        return facts
    if after.rescued:
        return {'image': after.image, 'stable_device': after.stable_device, 'disks': after.disks}
    if plan == ['unrescue'] and check_mode:
        return {'image': before.image, 'stable_device': before.stable_device, 'disks': before.disks,
                'planned_to_end': True}
    return {'image': None, 'stable_device': None, 'disks': []}
