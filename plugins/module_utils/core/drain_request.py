# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the caller of a drain or evacuation asks (host_evacuate's options), and its validation.

`retry_budget` (seconds, default 60, 0 = no tolerance): how long the shared progress read may keep
failing before the run ends with its record (drain_window.py); also how long a failed service restore
is tried again (drain_service.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import POLICIES


class MoveRequest(object):
    """What the caller wants (the module's options).  Defaults as documented in host_evacuate."""

    FIELDS = dict(
        host=None, mode='drain', target_host=None, window=None, deadline=600, deadline_action='abort',
        cold_fallback=True, block_migration='auto', suspended_policy='move', shelved_policy='move',
        rescued_policy=None, error_policy='skip', disable=True, disabled_reason=None,
        restore_service_on_failure=True, fenced=False, force_down=False, power_state='keep',
        lock_during_move=None, instances=None, poll_interval=0.4, progress_file=None, timeout=3600,
        retry_budget=60, reserved_host=None, shared_storage=False, destinations=None,
    )

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError('unknown MoveRequest fields: %s' % ', '.join(sorted(unknown)))
        for key, default in self.FIELDS.items():
            value = kwargs.get(key)
            setattr(self, key, default if value is None else value)
        if self.rescued_policy is None:
            # Someone is repairing a rescued server: a drain refuses it by default.  A dead host's rescue
            # session is lost anyway: an evacuation brings the server back running.
            self.rescued_policy = 'move' if self.mode == 'evacuate' else 'fail'

    def policy_for(self, state):
        return {states.SUSPENDED: self.suspended_policy, states.SHELVED: self.shelved_policy,
                states.RESCUED: self.rescued_policy, states.ERROR: self.error_policy}.get(state)

    def target_for(self, subject):
        """Where this instance is sent: its entry in destinations (by name or ID), else target_host (None:
        the scheduler chooses)."""
        destinations = self.destinations or {}
        return destinations.get(subject.id) or destinations.get(subject.name) or self.target_host

    def as_dict(self):
        return dict((key, getattr(self, key)) for key in self.FIELDS)


def validate_request(request, backend_name=None):
    """Refuse bad or contradictory input before anything is contacted."""
    if not request.host:
        raise InvalidRequest('host is required.')
    if request.mode not in ('drain', 'evacuate'):
        raise InvalidRequest("mode must be drain or evacuate, not '%s'." % request.mode)
    if request.target_host is not None and request.target_host == request.host:
        raise InvalidRequest('target_host is the host being emptied (%s).' % request.host)
    if request.window is not None and request.window < 1:
        raise InvalidRequest('window must be at least 1, got %s.' % request.window)
    for name in ('deadline', 'timeout', 'poll_interval'):
        if getattr(request, name) <= 0:
            raise InvalidRequest('%s must be a positive number of seconds, got %s.' % (name, getattr(request, name)))
    if request.retry_budget < 0:
        raise InvalidRequest('retry_budget must be 0 (no tolerance) or a positive number of seconds, got %s.'
                             % request.retry_budget)
    if request.deadline_action not in ('abort', 'force_complete'):
        raise InvalidRequest("deadline_action must be abort or force_complete, not '%s'." % request.deadline_action)
    for name in ('suspended_policy', 'shelved_policy', 'rescued_policy', 'error_policy'):
        if getattr(request, name) not in POLICIES:
            raise InvalidRequest('%s must be one of %s.' % (name, ', '.join(POLICIES)))
    if request.power_state not in ('keep', 'running', 'stopped'):
        raise InvalidRequest("power_state must be keep, running or stopped, not '%s'." % request.power_state)
    if request.mode == 'drain':
        for name in ('fenced', 'force_down'):
            if getattr(request, name):
                raise InvalidRequest('%s applies to mode=evacuate only.' % name)
        if request.power_state != 'keep':
            raise InvalidRequest('power_state applies to mode=evacuate only; a drain keeps each power state.')
    if request.force_down and not request.fenced:
        raise InvalidRequest('force_down needs fenced=true: forcing a host down while its instances may still '
                             'run there risks two copies of each instance. Fence the host first, then say so.')
    if request.reserved_host is not None:
        if request.mode != 'evacuate':
            raise InvalidRequest('reserved_host applies to mode=evacuate only.')
        if request.target_host is not None:
            raise InvalidRequest('reserved_host and target_host are exclusive: the reserved host is the target.')
        if request.reserved_host == request.host:
            raise InvalidRequest('reserved_host is the host being evacuated (%s).' % request.host)
    if request.destinations:
        if request.target_host is not None:
            raise InvalidRequest('destinations and target_host are exclusive: destinations names the target of '
                                 'each instance, target_host one target for all.')
        if request.mode != 'drain':
            raise InvalidRequest('destinations applies to mode=drain only.')
        if backend_name == 'libvirt':
            raise InvalidRequest('destinations applies to the OpenStack backend only: a libvirt drain has one '
                                 'destination URI (target_host); drain once per destination with instances.')
        bad = sorted('%s -> %s' % (key, value) for key, value in request.destinations.items()
                     if not value or value == request.host)
        if bad:
            raise InvalidRequest('destinations must name another compute host for each instance; refused: %s '
                                 '(the host being emptied is %s).' % (', '.join(bad), request.host))
    if request.disabled_reason is not None and not request.disable:
        raise InvalidRequest('disabled_reason needs disable=true.')
