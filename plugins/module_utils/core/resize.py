# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resize an instance to a flavor, with Nova's two-phase confirm or revert.

Kept apart from the power-state engine: a resize changes a property (the flavor), not a state,
and its plan depends on the flavor and on whether a resize is already waiting for a verdict.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceLocked, InstanceNotFound, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until

# flavor:  wanted flavor name or ID (None with revert)
# finish:  'confirm' (resize and confirm), 'keep' (leave the resize waiting for a verdict),
#          'revert' (undo a waiting resize; flavor not needed)
ResizeRequest = collections.namedtuple('ResizeRequest', 'identifier flavor finish wait timeout')


def validate_resize_request(model, request):
    if model.name != 'openstack':
        raise InvalidRequest('Resizing is supported on the OpenStack backend only, not on %s.' % model.name)
    if request.finish != 'revert' and not request.flavor:
        raise InvalidRequest('flavor is required unless finish=revert.')
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)


def plan_resize(observation, request, wanted_flavor):
    """The verbs to run, from the observed server; [] when there is nothing to do."""
    pending = observation.state == states.RESIZE_PENDING
    current = observation.details.get('flavor')
    if request.finish == 'revert':
        return ['revert_resize'] if pending else []
    if pending:
        if current != wanted_flavor['name']:
            raise InvalidRequest('A resize of %s to %s is waiting for confirm or revert; settle it before '
                                 'asking for %s.' % (observation.name, current, wanted_flavor['name']))
        return ['confirm_resize'] if request.finish == 'confirm' else []
    if current == wanted_flavor['name']:
        return []
    if observation.state not in (states.RUNNING, states.STOPPED):
        raise InvalidRequest('%s is %s; Nova resizes running or stopped servers only.'
                             % (observation.name, observation.state))
    return ['resize'] + (['confirm_resize'] if request.finish == 'confirm' else [])


def ensure_flavor(backend, request, check_mode=False):
    """Converge the flavor of one server; returns the module result."""
    validate_resize_request(backend.model, request)
    deadline = Deadline(request.timeout)
    ref = backend.find(request.identifier)
    if ref is None:
        raise InstanceNotFound("No instance '%s' at %s." % (request.identifier, backend.location()))
    wanted_flavor = backend.find_flavor(request.flavor) if request.flavor else None
    before = _settled(backend, ref, deadline)
    plan = plan_resize(before, request, wanted_flavor)
    if plan and before.details.get('locked'):
        raise InstanceLocked('%s is locked (reason: %s); unlock it first (instance_state locked=false).'
                             % (before.name, before.details.get('locked_reason') or 'none given'))
    executed, after = [], before
    if plan and not check_mode:
        try:
            for verb in plan:
                started = time.monotonic()
                executed.append({'verb': verb})
                if verb == 'resize':
                    backend.resize(ref, wanted_flavor['id'])
                else:
                    getattr(backend, verb)(ref)
                if not request.wait and verb == plan[-1]:
                    break
                after = _wait_for(backend, ref, before.name, verb, deadline)
                executed[-1]['seconds'] = round(time.monotonic() - started, 3)
        except VmopsError as error:
            error.details.setdefault('executed', executed)
            raise
        after = backend.observe(ref) if not request.wait else after
    return {
        'changed': bool(plan),
        'instance': {
            'name': before.name, 'id': before.id, 'backend': backend.model.name, 'location': backend.location(),
            'state_before': before.state, 'state': after.state,
            'flavor_before': before.details.get('flavor'), 'flavor': after.details.get('flavor'),
            'plan': plan, 'executed': executed, 'elapsed': round(deadline.elapsed(), 3),
            'api_requests': backend.request_count(), 'details': dict(after.details),
        },
        'diff': {'before': {'flavor': before.details.get('flavor'), 'state': before.state},
                 'after': _diff_after(before, plan, wanted_flavor)},
    }


def _diff_after(before, plan, wanted_flavor):
    if not plan:
        return {'flavor': before.details.get('flavor'), 'state': before.state}
    if plan == ['revert_resize']:
        return {'flavor': '(the flavor before the resize)', 'state': 'settled'}
    pending = plan[-1] == 'resize'
    return {'flavor': wanted_flavor['name'], 'state': states.RESIZE_PENDING if pending else 'settled'}


def _settled(backend, ref, deadline):
    observation = backend.observe(ref)
    if observation.task:
        observation = wait_until(lambda: backend.observe(ref), lambda o: not o.task, describe,
                                 'server %s to finish %s' % (observation.name, observation.task), deadline)
    return observation


def _wait_for(backend, ref, name, verb, deadline):
    """A resize lands in resize_pending; confirm and revert land in the power state the server had
    before the resize (running or stopped)."""
    def ready(observation):
        if observation.task:
            return False
        if verb == 'resize':
            return observation.state == states.RESIZE_PENDING
        return observation.state in (states.RUNNING, states.STOPPED)

    def failure(observation):
        if observation.state == states.ERROR:
            return 'the server is in error: %s' % observation.fault
        return None
    return wait_until(lambda: backend.observe(ref), ready, describe,
                      'server %s to finish %s' % (name, verb), deadline, failure=failure)
