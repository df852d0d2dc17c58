# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nova's compute services: read, disable / enable with a reason, force down / up (host_service and
the drain's service handling).  2.53+: services are addressed by UUID."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, RequestFailed
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import placement
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import OpenStackBackend

SERVICES_MICROVERSION = '2.84'


def service_view(body):
    """Nova's service body in the module's words."""
    if body is None:
        return None
    return {'id': body.get('id'), 'host': body.get('host'), 'binary': body.get('binary'),
            'status': body.get('status'), 'state': body.get('state'), 'zone': body.get('zone'),
            'disabled_reason': body.get('disabled_reason'), 'forced_down': bool(body.get('forced_down')),
            'updated_at': body.get('updated_at')}


def admin_hint(error):
    """A 403 on host operations means the credentials lack the admin role: say so."""
    if error.details.get('http_status') == 403:
        error.msg += ' Host and migration operations need an admin role.'
    return error


class ComputeServices(object):
    """The compute services of one cloud, over the backend's request layer."""

    def __init__(self, backend):
        self.backend = backend
        self._cache = None

    @classmethod
    def open(cls, params):
        return cls(OpenStackBackend(params))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.backend.close()
        return False

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.backend.request_count()

    def _get(self, params):
        try:
            return self.backend.nova('GET', '/os-services', microversion=SERVICES_MICROVERSION,
                                     params=params).json()['services']
        except RequestFailed as error:
            raise admin_hint(error)

    def all(self, binary='nova-compute', refresh=False):
        if self._cache is None or refresh:
            self._cache = [service_view(s) for s in self._get({'binary': binary})]
        return self._cache

    def find(self, host, binary='nova-compute'):
        found = [s for s in self._get({'binary': binary, 'host': host}) if s['host'] == host]
        return service_view(found[0]) if found else None

    def get(self, host):
        services = self.all()
        found = [s for s in services if s['host'] == host]
        if not found:
            raise InvalidRequest('No nova-compute service on host %s in %s; known hosts: %s.'
                                 % (host, self.location(), ', '.join(sorted(s['host'] for s in services))))
        return found[0]

    def update(self, service, disabled=None, reason=None, forced_down=None):
        """PUT /os-services/{id}; returns the service after.  Setting a state is idempotent, and an
        ambiguous failure is settled by reading the service back."""
        body = {}
        if disabled is not None:
            body['status'] = 'disabled' if disabled else 'enabled'
            if disabled and reason:
                body['disabled_reason'] = reason
        if forced_down is not None:
            body['forced_down'] = bool(forced_down)

        def applied():
            now = self.find(service['host'], service['binary'])
            return now is not None and all(now.get(key) == value for key, value in body.items())
        try:
            response = self.backend.nova('PUT', '/os-services/%s' % service['id'], microversion=SERVICES_MICROVERSION,
                                         json=body, verify=applied)
        except RequestFailed as error:
            error.msg = 'Nova refused to update the %s service of %s: %s' % (service['binary'], service['host'],
                                                                             error.msg)
            raise admin_hint(error)
        after = service_view(response.json()['service']) if response is not None else \
            self.find(service['host'], service['binary'])
        if self._cache is not None:
            self._cache = [after if s['id'] == after['id'] else s for s in self._cache]
        return after


# host_service ------------------------------------------------------------------------------------

def validate_service_request(params):
    """Refuse bad input for host_service before connecting."""
    if params.get('backend') == 'libvirt' or params.get('libvirt_uri'):
        raise InvalidRequest('host_service controls a Nova compute service; libvirt has no compute service to '
                             'disable or force down (to keep new domains off a libvirt host, stop defining them '
                             'there). Use the OpenStack backend (cloud/auth).')
    if params.get('state') is None and params.get('forced_down') is None:
        raise InvalidRequest('Nothing asked: set state (enabled/disabled) and/or forced_down.')
    if params.get('disabled_reason') is not None and params.get('state') != 'disabled':
        raise InvalidRequest('disabled_reason needs state=disabled (Nova clears the reason on enable).')
    if params.get('wait_for_placement') and (params.get('state') != 'enabled' or params.get('forced_down')):
        raise InvalidRequest('wait_for_placement waits until the scheduler can use the host again: it needs '
                             'state=enabled and no forced_down=true.')
    if params.get('forced_down') and not params.get('fenced'):
        raise InvalidRequest('forced_down=true needs fenced=true: marking a host down lets Nova evacuate its '
                             'instances elsewhere, so first make sure the host is powered off or isolated '
                             '(fenced), then say so.')


def ensure_service(services, params, check_mode=False):
    """Converge one compute service (status, reason, forced_down); returns the module result."""
    host, binary = params['host'], params.get('binary') or 'nova-compute'
    before = services.find(host, binary)
    if before is None:
        raise InvalidRequest('No %s service on host %s in %s.' % (binary, host, services.location()))
    wanted_disabled = None if params.get('state') is None else params['state'] == 'disabled'
    change = {}
    if wanted_disabled is not None and (before['status'] == 'disabled') != wanted_disabled:
        change['disabled'] = wanted_disabled
    reason = params.get('disabled_reason')
    if wanted_disabled and reason is not None and before['disabled_reason'] != reason:
        change['disabled'] = True
    if params.get('forced_down') is not None and before['forced_down'] != params['forced_down']:
        change['forced_down'] = params['forced_down']
    after = before
    if change and not check_mode:
        after = services.update(before, disabled=change.get('disabled'),
                                reason=reason if change.get('disabled') else None,
                                forced_down=change.get('forced_down'))
    elif change:
        after = dict(before)
        if 'disabled' in change:
            after['status'] = 'disabled' if change['disabled'] else 'enabled'
            after['disabled_reason'] = reason if change['disabled'] else None
        if 'forced_down' in change:
            after['forced_down'] = change['forced_down']
            after['state'] = 'down' if change['forced_down'] else '(reported by the service within its report interval)'
    keys = ('status', 'disabled_reason', 'forced_down', 'state')
    result = {
        'changed': bool(change),
        'service': {'before': before, 'after': after},
        'diff': {'before': dict((k, before[k]) for k in keys), 'after': dict((k, after[k]) for k in keys)},
    }
    if params.get('wait_for_placement'):
        result['placement'] = placement_ready(services, host, binary, params.get('timeout') or 180,
                                              wait=not check_mode)
    result['api_requests'] = services.request_count()
    return result


def placement_ready(services, host, binary, timeout, wait=True):
    """Wait until the scheduler can place servers on `host`: its service enabled and up, and no
    resource provider of it marked COMPUTE_STATUS_DISABLED in Placement.  Without `wait`, one look."""
    requests = services.backend.requests

    def observe():
        return placement.readiness(requests, host, services.find(host, binary))
    if not wait:
        return dict(observe(), waited=0.0)
    started = time.monotonic()
    found = wait_until(observe, lambda seen: seen['usable'], lambda seen: '; '.join(seen['reasons']),
                       '%s to be usable by the scheduler (Placement)' % host, timeout)
    return dict(found, waited=round(time.monotonic() - started, 3))
