# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenStack backend: Nova servers through openstacksdk, one connection per module run.

Every request goes through the request layer (request.py): server actions at an explicit
microversion (STATE_MICROVERSION), so what a playbook does does not change with the SDK's or the
cloud's defaults; transient failures retried; every HTTP request of the run counted and reported.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import uuid

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Backend, Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InvalidRequest, RequestFailed, ResourceNotFound)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.request import (
    HAS_LIBRARY, LIBRARY, LIBRARY_IMPORT_ERROR, RequestLayer)

__all__ = ['HAS_LIBRARY', 'LIBRARY', 'LIBRARY_IMPORT_ERROR', 'MODEL', 'OpenStackBackend']

# 2.73: lock with a reason, and locked_reason in the server body.  Zed (the oldest cloud we test)
# offers up to 2.93.
STATE_MICROVERSION = '2.73'
# How long a server body read by find() answers the observe() that follows it.
FOUND_BODY_SECONDS = 2.0

t = states.transition
MODEL = states.BackendModel('openstack', (
    states.RUNNING, states.STOPPED, states.PAUSED, states.SUSPENDED, states.SHELVED,
    states.SHELVED_OFFLOADED, states.RESCUED, states.RESIZE_PENDING, states.ERROR, states.ABSENT,
), (
    t('start', states.STOPPED, states.RUNNING),
    t('stop', states.RUNNING, states.STOPPED),      # Nova asks the guest, then powers off after its own timeout
    t('pause', states.RUNNING, states.PAUSED),
    t('unpause', states.PAUSED, states.RUNNING),
    t('suspend', states.RUNNING, states.SUSPENDED),
    t('resume', states.SUSPENDED, states.RUNNING),
    t('shelve', states.RUNNING, states.SHELVED),
    t('shelve', states.STOPPED, states.SHELVED),
    t('shelve', states.PAUSED, states.SHELVED),
    t('shelve', states.SUSPENDED, states.SHELVED),
    t('shelve_offload', states.SHELVED, states.SHELVED_OFFLOADED),
    t('unshelve', states.SHELVED, states.RUNNING),
    t('unshelve', states.SHELVED_OFFLOADED, states.RUNNING),
    t('rescue', states.RUNNING, states.RESCUED),
    t('rescue', states.STOPPED, states.RESCUED),
    t('unrescue', states.RESCUED, states.RUNNING),
    t('delete', states.RUNNING, states.ABSENT),
    t('delete', states.STOPPED, states.ABSENT),
    t('delete', states.PAUSED, states.ABSENT),
    t('delete', states.SUSPENDED, states.ABSENT),
    t('delete', states.SHELVED, states.ABSENT),
    t('delete', states.SHELVED_OFFLOADED, states.ABSENT),
    t('delete', states.RESCUED, states.ABSENT),
    # Leaving ERROR (Nova's own recovery verbs) throws away what the failed operation left:
    # only on a hard request.
    t('stop', states.ERROR, states.STOPPED, forced=True),
    t('reboot_hard', states.ERROR, states.RUNNING, forced=True),
    t('delete', states.ERROR, states.ABSENT),     # nothing a gentler path could keep
    t('reboot_soft', states.RUNNING, states.RUNNING),
    t('reboot_hard', states.RUNNING, states.RUNNING),
), satisfied_by={
    # A cloud with shelved_offload_time = 0 offloads at once: shelved_offloaded is shelved too.
    states.SHELVED: (states.SHELVED_OFFLOADED,),
}, has_lock=True)

STATUS_TO_STATE = {
    'ACTIVE': states.RUNNING, 'SHUTOFF': states.STOPPED, 'PAUSED': states.PAUSED,
    'SUSPENDED': states.SUSPENDED, 'SHELVED': states.SHELVED, 'SHELVED_OFFLOADED': states.SHELVED_OFFLOADED,
    'RESCUE': states.RESCUED, 'VERIFY_RESIZE': states.RESIZE_PENDING, 'ERROR': states.ERROR,
    'DELETED': states.ABSENT, 'SOFT_DELETED': states.ABSENT,
}
# Statuses of a server in the middle of something: the status itself is the task.
TRANSITIONAL_STATUSES = ('BUILD', 'REBOOT', 'HARD_REBOOT', 'MIGRATING', 'RESIZE', 'REVERT_RESIZE',
                         'REBUILD', 'PASSWORD', 'UNKNOWN')

# Request bodies of POST /servers/{id}/action, by verb.
ACTION_BODIES = {
    'start': {'os-start': None}, 'stop': {'os-stop': None},
    'pause': {'pause': None}, 'unpause': {'unpause': None},
    'suspend': {'suspend': None}, 'resume': {'resume': None},
    'shelve': {'shelve': None}, 'shelve_offload': {'shelveOffload': None}, 'unshelve': {'unshelve': None},
    'rescue': {'rescue': {}}, 'unrescue': {'unrescue': None},
    'reboot_soft': {'reboot': {'type': 'SOFT'}}, 'reboot_hard': {'reboot': {'type': 'HARD'}},
    'unlock': {'unlock': None},
}

CONNECTION_KEYS = ('auth', 'auth_type', 'region_name', 'interface', 'api_timeout')


def _looks_like_uuid(text):
    try:
        uuid.UUID(text)
        return True
    except (ValueError, TypeError, AttributeError):
        return False


class Resource(dict):
    """A resource body (image, flavor, network, volume) whose fields read as attributes too; its
    `properties` are the body itself (Glance keeps image properties at the top level)."""

    def __getattr__(self, name):
        if name == 'properties':
            return self
        return self.get(name)


class OpenStackBackend(Backend):
    model = MODEL

    def __init__(self, params, requests=None):
        self.cloud_name = params.get('cloud') if isinstance(params.get('cloud'), str) else None
        # Authentication happens on the first request (the look-up), so bad credentials still fail
        # before any plan, without a request of their own.
        self.requests = requests or RequestLayer.open(params)
        self.conn = self.requests.conn
        self._found = {}        # server id -> (monotonic time, body) read by find()
        self._last_seen = {}    # server id -> the last body observed (what an ambiguous action is checked against)

    def close(self):
        if getattr(self, 'requests', None) is not None:
            self.requests.close()
            self.requests = None
            self.conn = None

    def bound_by(self, deadline):
        """No retry of the request layer goes past the run's deadline."""
        self.requests.deadline = deadline

    def request_count(self):
        return self.requests.request_count() if self.requests is not None else None

    def location(self):
        return 'OpenStack cloud %s' % (self.cloud_name or '(configured from auth or environment)')

    def nova(self, method, path, microversion=STATE_MICROVERSION, **kwargs):
        """A compute request through the request layer (microversion named by the caller)."""
        return self.requests.call('compute', method, path, microversion=microversion, **kwargs)

    # Look-up ---------------------------------------------------------------------------------

    def find(self, identifier):
        """A server by ID, else by exact name within the project; an ambiguous name is an error.
        The body read here answers the observe() that follows, so a no-op run costs one read."""
        if _looks_like_uuid(identifier):
            body = self.get_server(identifier)
            if body is not None:
                self._found[body['id']] = (time.monotonic(), body)
                return body['id']
        response = self.nova('GET', '/servers/detail', params={'name': '^%s$' % _regex_escape(identifier)})
        matches = [server for server in response.json()['servers'] if server['name'] == identifier]
        if len(matches) > 1:
            raise InvalidRequest('%d servers are named %s: %s. Name one by its ID.'
                                 % (len(matches), identifier, ', '.join(sorted(s['id'] for s in matches))),
                                 matching_ids=sorted(s['id'] for s in matches))
        if not matches:
            return None
        self._found[matches[0]['id']] = (time.monotonic(), matches[0])
        return matches[0]['id']

    def observe(self, ref):
        found = self._found.pop(ref, None)
        if found is not None and time.monotonic() - found[0] < FOUND_BODY_SECONDS:
            body = found[1]
        else:
            body = self.get_server(ref)
        if body is None:
            return Observation(None, ref, states.ABSENT, None, None, {})
        self._last_seen[ref] = body
        observation = observation_from_server(body)
        if body.get('locked'):
            observation.details['unlock_hint'] = unlock_hint(self.caller_is_admin())
        return observation

    def caller_is_admin(self):
        """Whether this run's token carries the admin role (read from the token: no request); None when unknown."""
        try:
            conn = self.requests.conn
            return 'admin' in conn.session.auth.get_access(conn.session).role_names
        except Exception:  # pylint: disable=broad-except
            return None

    def get_server(self, server_id, microversion=STATE_MICROVERSION):
        """The server body, or None when Nova says it does not exist."""
        try:
            return self.nova('GET', '/servers/%s' % server_id, microversion=microversion).json()['server']
        except ResourceNotFound:
            return None

    # Acting ----------------------------------------------------------------------------------

    def perform(self, ref, verb, options=None):
        self._found.pop(ref, None)
        if verb == 'delete':
            try:
                self.nova('DELETE', '/servers/%s' % ref, verify=lambda: self._deleted(ref))
            except ResourceNotFound:
                pass    # already gone: that is what we wanted
            return None
        if verb == 'lock':
            reason = (options or {}).get('lock_reason')
            self.server_action(ref, verb, {'lock': {'locked_reason': reason} if reason else None})
            return _lock_is(True)
        self.server_action(ref, verb, ACTION_BODIES[verb])
        return _lock_is(False) if verb == 'unlock' else None

    def server_action(self, ref, verb, body, name=None, microversion=STATE_MICROVERSION, verify=None):
        """POST /servers/{id}/action.  When the request may or may not have reached Nova, a fresh read
        decides (Nova sets task_state before it answers 202): it is never sent twice."""
        if verify is None:
            verify = self.action_verifier(ref, verb)
        try:
            return self.nova('POST', '/servers/%s/action' % ref, microversion=microversion, json=body, verify=verify)
        except RequestFailed as error:
            error.msg = 'Nova refused %s of %s: %s' % (verb, name or ref, error.details.get('service_message')
                                                       or error.msg) \
                if error.details.get('http_status') else error.msg
            error.details.setdefault('verb', verb)
            raise

    def action_verifier(self, ref, verb):
        """A read that says whether an action on the server took effect."""
        before = self._last_seen.get(ref) or {}

        def took_effect():
            body = self.get_server(ref)
            if body is None:
                return verb == 'delete'
            return action_took_effect(verb, before, body)
        return took_effect

    def _deleted(self, ref):
        body = self.get_server(ref)
        return body is None or body.get('OS-EXT-STS:task_state') == 'deleting' or body.get('status') == 'DELETED'

    # Launch (instance_launch) --------------------------------------------------------------

    def resolve(self, kind, identifier):
        """The image, flavor, network or volume named or identified by `identifier` (a Resource)."""
        service, collection, key = {
            'image': ('image', '/images', None), 'flavor': ('compute', '/flavors', 'flavor'),
            'network': ('network', '/networks', 'network'), 'volume': ('block_storage', '/volumes', 'volume'),
        }[kind]
        microversion = STATE_MICROVERSION if service == 'compute' else None
        if kind == 'flavor':
            return Resource(self.find_flavor(identifier))
        if _looks_like_uuid(identifier):
            try:
                body = self.requests.json(service, 'GET', '%s/%s' % (collection, identifier),
                                          microversion=microversion)
                return Resource(body[key] if key else body)
            except ResourceNotFound:
                pass
        listing = self.requests.json(service, 'GET', collection + ('/detail' if kind == 'volume' else ''),
                                     params={'name': identifier}, microversion=microversion)
        found = [item for item in listing[kind + 's'] if item.get('name') == identifier]
        if len(found) > 1:
            raise InvalidRequest('More than one %s is named %s; give its ID.' % (kind, identifier))
        if not found:
            raise InvalidRequest('No %s %s in %s.' % (kind, identifier, self.location()))
        return Resource(found[0])

    def create_server(self, body):
        """POST /servers; returns the new server's ID.  Not resent on an ambiguous failure: a read by
        name (the caller's next look-up) tells whether it was created."""
        try:
            return self.nova('POST', '/servers', json={'server': body}).json()['server']['id']
        except RequestFailed as error:
            error.msg = 'Nova refused to create server %s: %s' % (body.get('name'), error.msg)
            raise

    # Resize (instance_resize) --------------------------------------------------------------

    def find_flavor(self, identifier):
        """A flavor by ID or exact name: (id, name, ram, vcpus, disk); InvalidRequest if none."""
        for flavor in self.nova('GET', '/flavors/detail', params={'is_public': 'None'}).json()['flavors']:
            if identifier in (flavor['id'], flavor['name']):
                return flavor
        raise InvalidRequest('No flavor %s in %s.' % (identifier, self.location()))

    def resize(self, ref, flavor_id):
        self.server_action(ref, 'resize', {'resize': {'flavorRef': flavor_id}})

    def confirm_resize(self, ref):
        self.server_action(ref, 'confirm_resize', {'confirmResize': None})

    def revert_resize(self, ref):
        self.server_action(ref, 'revert_resize', {'revertResize': None})


# The status each server action leads to (an action whose server shows it, or shows a task, took effect).
ACTION_LANDS_IN = {
    'start': 'ACTIVE', 'stop': 'SHUTOFF', 'pause': 'PAUSED', 'unpause': 'ACTIVE', 'suspend': 'SUSPENDED',
    'resume': 'ACTIVE', 'shelve': 'SHELVED', 'shelve_offload': 'SHELVED_OFFLOADED', 'unshelve': 'ACTIVE',
    'rescue': 'RESCUE', 'unrescue': 'ACTIVE', 'resize': 'VERIFY_RESIZE', 'confirm_resize': 'ACTIVE',
    'revert_resize': 'ACTIVE',
}

# os-resetState verbs (host_evacuate) and the vm_state each sets.
RESET_LANDS_IN = {'reset_state': 'error', 'reset_active': 'active'}


def action_took_effect(verb, before, after):
    """Whether a server action took effect, from the body before it was sent and a fresh one after.
    Nova sets task_state (or the lock) before it answers 202, so an accepted action always shows; a
    state action is only ever sent to a server not yet in the state it leads to."""
    if verb == 'lock':
        return bool(after.get('locked'))
    if verb == 'unlock':
        return not after.get('locked')
    if verb in RESET_LANDS_IN:     # os-resetState: synchronous, and it clears the task
        return after.get('OS-EXT-STS:vm_state') == RESET_LANDS_IN[verb] and not after.get('OS-EXT-STS:task_state')
    if after.get('OS-EXT-STS:task_state'):
        return True
    wanted = ACTION_LANDS_IN.get(verb)
    if wanted is not None:
        return after.get('status') == wanted
    if not before:
        return False
    # A reboot, a rebuild, a move, a confirm: the server changed since it was last seen.
    return (after.get('updated') != before.get('updated')
            or after.get('OS-EXT-SRV-ATTR:host') != before.get('OS-EXT-SRV-ATTR:host'))


def unlock_hint(is_admin):
    """Who can lift a server's lock.  Nova lets a project member unlock only a lock its owner took; a lock an
    admin took (of any project) can be lifted by an admin only (policy os-lock-server:unlock:unlock_override),
    and the API does not say who took it."""
    if is_admin:
        return 'Set locked=false to unlock it first'
    return ('Set locked=false to unlock it first if its own project locked it. If an admin locked it (for example '
            'for maintenance or an evacuation; see the reason), only an admin can unlock it: ask the cloud\'s '
            'administrators, or run this task with admin credentials')


def observation_from_server(body):
    """Nova's server body in the core's words."""
    status = body.get('status', 'UNKNOWN')
    task_state = body.get('OS-EXT-STS:task_state')
    if status in TRANSITIONAL_STATUSES:
        state, task = states.RUNNING, task_state or status.lower()
    else:
        state, task = STATUS_TO_STATE.get(status, states.ERROR), task_state
    fault = None
    if state == states.ERROR:
        fault = (body.get('fault') or {}).get('message') or 'Nova gave no fault message'
    details = {
        'status': status, 'task_state': task_state, 'vm_state': body.get('OS-EXT-STS:vm_state'),
        'power_state': body.get('OS-EXT-STS:power_state'),
        'locked': bool(body.get('locked')), 'locked_reason': body.get('locked_reason'),
        'host': body.get('OS-EXT-SRV-ATTR:host'), 'flavor': (body.get('flavor') or {}).get('original_name'),
    }
    return Observation(body.get('name'), body.get('id'), state, task, fault, details)


def _lock_is(locked):
    def settled(observation):
        return observation.details.get('locked') is locked
    settled.waiting_for = 'the server to be %s' % ('locked' if locked else 'unlocked')
    return settled


def _regex_escape(text):
    # Nova matches `name` as a regular expression: escape it to mean exactly this name.
    special = '\\.^$*+?{}[]|()'
    return ''.join('\\' + char if char in special else char for char in text)
