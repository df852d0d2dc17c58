# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenStack backend: Nova servers through openstacksdk, one connection per module run.

Server actions go to the compute API at an explicit microversion (COMPUTE_MICROVERSION), so
what a playbook does does not change with the SDK's or the cloud's defaults.  Every HTTP
request of the run (authentication and discovery included) is counted and reported.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback
import uuid

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Backend, Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, ConnectionFailed, InvalidRequest)

LIBRARY_IMPORT_ERROR = None
try:
    import openstack
    from openstack import exceptions as sdk_exceptions
except ImportError:
    openstack = None
    sdk_exceptions = None
    LIBRARY_IMPORT_ERROR = traceback.format_exc()

LIBRARY = 'openstacksdk'
HAS_LIBRARY = openstack is not None

# 2.73: lock with a reason, and locked_reason in the server body.  Zed (the oldest cloud we test)
# offers up to 2.93.
COMPUTE_MICROVERSION = '2.73'

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


class RequestCounter(object):
    """Counts the HTTP requests a keystoneauth session sends (auth and discovery included)."""

    def __init__(self, session):
        self.count = 0
        self.by_method = {}
        original = session.request

        def counted(url, method, *args, **kwargs):
            self.count += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            return original(url, method, *args, **kwargs)
        session.request = counted


def connect(params):
    """An openstacksdk connection from options named as in the openstack.cloud collection."""
    cloud = params.get('cloud')
    if isinstance(cloud, dict):
        if any(params.get(key) for key in CONNECTION_KEYS if key != 'interface'):
            raise InvalidRequest('When cloud is a dict it is the whole configuration; '
                                 'leave auth, auth_type, region_name and api_timeout out.')
        config = dict(cloud)
    else:
        config = {'cloud': cloud} if cloud else {}
        for key in CONNECTION_KEYS:
            if params.get(key) is not None:
                config[key] = params[key]
        for ours, sdks in (('validate_certs', 'verify'), ('ca_cert', 'cacert'),
                           ('client_cert', 'cert'), ('client_key', 'key')):
            if params.get(ours) is not None:
                config[sdks] = params[ours]
    try:
        return openstack.connect(**config)
    except Exception as error:  # the SDK raises several unrelated types for bad configuration
        raise ConnectionFailed('Cannot connect to OpenStack (cloud %s): %s' % (cloud or 'from the environment', error))


class OpenStackBackend(Backend):
    model = MODEL

    def __init__(self, params):
        self.cloud_name = params.get('cloud') if isinstance(params.get('cloud'), str) else None
        self.conn = connect(params)
        self.requests = RequestCounter(self.conn.session)
        self.compute = self.conn.compute
        try:
            # Authenticates and finds the endpoint now, so bad credentials fail before any plan.
            sdk_exceptions.raise_from_response(self.compute.get('/', microversion=COMPUTE_MICROVERSION))
        except Exception as error:  # keystoneauth raises its own types for auth and connection errors
            self.close()
            raise ConnectionFailed('Cannot reach the compute API of %s: %s' % (self.location(), _sdk_message(error)))

    def close(self):
        if getattr(self, 'conn', None) is not None:
            self.conn.close()
            self.conn = None

    def request_count(self):
        return self.requests.count

    def location(self):
        return 'OpenStack cloud %s' % (self.cloud_name or '(configured from auth or environment)')

    # Look-up ---------------------------------------------------------------------------------

    def find(self, identifier):
        """A server by ID, else by exact name within the project; an ambiguous name is an error."""
        if _looks_like_uuid(identifier):
            body = self._get_server(identifier)
            if body is not None:
                return body['id']
        response = self._call('GET', '/servers', params={'name': '^%s$' % _regex_escape(identifier)})
        matches = [server for server in response.json()['servers'] if server['name'] == identifier]
        if len(matches) > 1:
            raise InvalidRequest('%d servers are named %s: %s. Name one by its ID.'
                                 % (len(matches), identifier, ', '.join(sorted(s['id'] for s in matches))),
                                 matching_ids=sorted(s['id'] for s in matches))
        return matches[0]['id'] if matches else None

    def observe(self, ref):
        body = self._get_server(ref)
        if body is None:
            return Observation(None, ref, states.ABSENT, None, None, {})
        return observation_from_server(body)

    def _get_server(self, server_id):
        try:
            return self._call('GET', '/servers/%s' % server_id).json()['server']
        except sdk_exceptions.NotFoundException:
            return None

    # Acting ----------------------------------------------------------------------------------

    def perform(self, ref, verb, options=None):
        if verb == 'delete':
            try:
                self._call('DELETE', '/servers/%s' % ref)
            except sdk_exceptions.NotFoundException:
                pass    # already gone: that is what we wanted
            return None
        if verb == 'lock':
            reason = (options or {}).get('lock_reason')
            self._action(ref, verb, {'lock': {'locked_reason': reason} if reason else None})
            return _lock_is(True)
        self._action(ref, verb, ACTION_BODIES[verb])
        return _lock_is(False) if verb == 'unlock' else None

    # Launch (instance_launch) --------------------------------------------------------------

    def resolve(self, kind, identifier):
        """ID of an image, flavor, network or volume named or identified by `identifier`."""
        finders = {'image': self.conn.image.find_image, 'flavor': self.conn.compute.find_flavor,
                   'network': self.conn.network.find_network, 'volume': self.conn.block_storage.find_volume}
        try:
            found = finders[kind](identifier, ignore_missing=True)
        except sdk_exceptions.DuplicateResource:
            raise InvalidRequest('More than one %s is named %s; give its ID.' % (kind, identifier))
        if found is None:
            raise InvalidRequest('No %s %s in %s.' % (kind, identifier, self.location()))
        return found

    def create_server(self, body):
        """POST /servers; returns the new server's ID."""
        try:
            return self._call('POST', '/servers', json={'server': body}).json()['server']['id']
        except sdk_exceptions.HttpException as error:
            raise BackendError('Nova refused to create server %s: %s' % (body.get('name'), _sdk_message(error)),
                               http_status=error.status_code)

    # Resize (instance_resize) --------------------------------------------------------------

    def find_flavor(self, identifier):
        """A flavor by ID or exact name: (id, name, ram, vcpus, disk); InvalidRequest if none."""
        for flavor in self._call('GET', '/flavors/detail', params={'is_public': 'None'}).json()['flavors']:
            if identifier in (flavor['id'], flavor['name']):
                return flavor
        raise InvalidRequest('No flavor %s in %s.' % (identifier, self.location()))

    def resize(self, ref, flavor_id):
        self._action(ref, 'resize', {'resize': {'flavorRef': flavor_id}})

    def confirm_resize(self, ref):
        self._action(ref, 'confirm_resize', {'confirmResize': None})

    def revert_resize(self, ref):
        self._action(ref, 'revert_resize', {'revertResize': None})

    def _action(self, ref, verb, body):
        try:
            self._call('POST', '/servers/%s/action' % ref, json=body)
        except sdk_exceptions.HttpException as error:
            raise BackendError('Nova refused %s of server %s: %s' % (verb, ref, _sdk_message(error)),
                               verb=verb, http_status=error.status_code)

    def _call(self, method, url, **kwargs):
        try:
            response = self.compute.request(url, method, microversion=COMPUTE_MICROVERSION, **kwargs)
        except sdk_exceptions.SDKException:
            raise       # the SDK's own errors (NotFound, HttpException) reach callers as they are
        except Exception as error:  # keystoneauth connection errors and the like
            raise ConnectionFailed('Compute API request %s %s failed: %s' % (method, url, error))
        sdk_exceptions.raise_from_response(response)
        return response


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


def _sdk_message(error):
    details = getattr(error, 'details', None)
    return '%s%s' % (getattr(error, 'message', None) or error, (' (%s)' % details) if details else '')
