# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one request layer of the OpenStack backend.

Every call to Nova, Placement, Glance, Cinder, Neutron and Keystone made by the collection goes
through `RequestLayer.call`: the service and its microversion are named per call, the SDK's and
keystoneauth's exceptions become the collection's errors (with the HTTP status, the method and
path, and the service's own message), transient failures are retried, and every HTTP request of the
run is counted.

Retry rules (docs/dev/architecture.md, "Surviving faults"):
  * transient: connection errors and resets, HTTP 502, 503, 504 and 429 (Retry-After honoured);
    full-jitter exponential backoff from 0.5 s to 8 s, for at most `retry_budget` seconds per call
    and never past the run's deadline;
  * reads (GET, HEAD) are always retried;
  * an action (POST, PUT, PATCH, DELETE) is resent only when it provably never reached the service
    (connection refused, 429, 401), or when the caller's `verify` read says it did not take effect;
    otherwise it fails with `sent: maybe` and is never applied twice;
  * HTTP 401: the token is renewed once and the request resent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import email.utils
import os
import random
import time
import traceback

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    ConnectionFailed, InvalidRequest, RequestFailed, ResourceNotFound, ServiceUnavailable)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.retry import DEFAULT_RETRY_BUDGET, RetryWindow, backoff, budget_seconds

LIBRARY_IMPORT_ERROR = None
try:
    import openstack
    from keystoneauth1 import exceptions as ksa_exceptions
except ImportError:
    openstack = None
    ksa_exceptions = None
    LIBRARY_IMPORT_ERROR = traceback.format_exc()

LIBRARY = 'openstacksdk'
HAS_LIBRARY = openstack is not None

READS = ('GET', 'HEAD')
TRANSIENT_STATUSES = (429, 502, 503, 504)

SERVICE_NAMES = {'compute': 'Compute (Nova)', 'placement': 'Placement', 'image': 'Image (Glance)',
                 'block_storage': 'Block storage (Cinder)', 'network': 'Network (Neutron)',
                 'identity': 'Identity (Keystone)'}
CONNECTION_KEYS = ('auth', 'auth_type', 'region_name', 'interface', 'api_timeout')


class RequestCounter(object):
    """Counts the HTTP requests a keystoneauth session sends (authentication and discovery included)."""

    def __init__(self, session):
        self.count = 0
        self.by_method = {}
        original = session.request

        def counted(url, method, *args, **kwargs):
            self.count += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            return original(url, method, *args, **kwargs)
        session.request = counted


def connection_config(params):
    """openstacksdk connect() arguments from options named as in the openstack.cloud collection."""
    cloud = params.get('cloud')
    if isinstance(cloud, dict):
        if any(params.get(key) for key in CONNECTION_KEYS if key != 'interface'):
            raise InvalidRequest('When cloud is a dict it is the whole configuration; '
                                 'leave auth, auth_type, region_name and api_timeout out.')
        return dict(cloud)
    config = {'cloud': cloud} if cloud else {}
    for key in CONNECTION_KEYS:
        if params.get(key) is not None:
            config[key] = params[key]
    for ours, sdks in (('validate_certs', 'verify'), ('ca_cert', 'cacert'),
                       ('client_cert', 'cert'), ('client_key', 'key')):
        if params.get(ours) is not None:
            config[sdks] = params[ours]
    return config


def connect(params):
    """An openstacksdk connection for the module options (the environment fills in what they leave out)."""
    if params.get('sdk_log_path'):
        openstack.enable_logging(debug=params.get('sdk_log_level') == 'DEBUG', path=params['sdk_log_path'],
                                 stream=None)
    cloud = params.get('cloud')
    try:
        return openstack.connect(**connection_config(params))
    except InvalidRequest:
        raise
    except Exception as error:  # the SDK raises several unrelated types for bad configuration
        raise ConnectionFailed('Cannot connect to OpenStack (cloud %s): %s'
                               % (cloud if isinstance(cloud, str) else 'from the environment', error))


def cloud_label(params):
    """How failures name the cloud: `cloud <name>`, the dict given as cloud, or the environment's OS_CLOUD."""
    cloud = params.get('cloud')
    if isinstance(cloud, str) and cloud:
        return 'cloud %s' % cloud
    if isinstance(cloud, dict):
        return 'the cloud given as a dict'
    named = os.environ.get('OS_CLOUD')
    return 'cloud %s (OS_CLOUD)' % named if named else 'the cloud from the environment (OS_* variables)'


class RequestLayer(object):
    """Sends every request of one run over one SDK connection (see the module docstring)."""

    def __init__(self, conn, retry_budget=DEFAULT_RETRY_BUDGET, clock=time.monotonic, sleep=time.sleep,
                 jitter=random.random):
        self.conn = conn
        self.retry_budget = budget_seconds(retry_budget)
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.deadline = None        # set by the caller: no retry goes past the run's own deadline
        self.counter = RequestCounter(conn.session) if getattr(conn, 'session', None) is not None else None
        self.by_service = {}
        self.retries = 0
        self.renewed_token = False

    @classmethod
    def open(cls, params):
        layer = cls(connect(params), retry_budget=params.get('retry_budget'))
        layer.cloud_label = cloud_label(params)
        return layer

    cloud_label = 'the cloud'     # named in authentication, reachability and TLS failures

    def auth_url(self):
        try:
            return self.conn.config.config['auth']['auth_url']
        except (AttributeError, KeyError, TypeError):
            return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request_count(self):
        return self.counter.count if self.counter is not None else sum(self.by_service.values())

    # --- the one entry point

    def call(self, service, method, path, microversion=None, params=None, json=None, headers=None, verify=None):
        """Send one request; returns the response (2xx/3xx), or None when an ambiguous action was
        found by `verify()` to have taken effect.  Raises ResourceNotFound (404), RequestFailed
        (refused, or an action that may have been applied), ServiceUnavailable (still failing when the
        budget ran out)."""
        method = method.upper()
        window = RetryWindow(self.retry_budget, self.deadline, self.clock)
        attempt = 0
        while True:
            attempt += 1
            failure = self._attempt(service, method, path, microversion, params, json, headers, attempt)
            if not isinstance(failure, _Transient):
                return failure
            if method not in READS and failure.sent != 'no':
                if verify is None:
                    raise self._error(RequestFailed, service, method, path, failure, attempt,
                                      extra=' It may have reached the service, so it was not sent again; read '
                                            'the resource to see whether it took effect.')
                if self._verified(verify, service, method, path, failure, attempt):
                    return None
            pause = backoff(attempt, self.jitter, failure.retry_after)
            if not window.allows(pause):
                raise self._error(ServiceUnavailable, service, method, path, failure, attempt,
                                  extra=' Still failing after %.1f s (retry_budget %s s).'
                                        % (window.elapsed(), self.retry_budget))
            self.retries += 1
            self.sleep(pause)

    def json(self, service, method, path, **kwargs):
        """call() and the decoded JSON body ({} for an empty body or an action verified as applied)."""
        response = self.call(service, method, path, **kwargs)
        if response is None or not response.content:
            return {}
        return response.json()

    # --- one attempt

    def _attempt(self, service, method, path, microversion, params, json, headers, attempt):
        self.by_service[service] = self.by_service.get(service, 0) + 1
        kwargs = {'raise_exc': False, 'connect_retries': 0}
        if microversion is not None:
            kwargs['microversion'] = microversion
        for key, value in (('params', params), ('json', json), ('headers', headers)):
            if value is not None:
                kwargs[key] = value
        try:
            response = getattr(self.conn, service).request(path, method, **kwargs)
        except Exception as error:  # pylint: disable=broad-except
            return self._classify_exception(service, method, path, error)
        status = response.status_code
        if status < 400:
            return response
        if status == 401 and service != 'identity' and not self.renewed_token:
            # An expired or revoked token: renew it once; a 401 is never processed.
            self.renewed_token = True
            self.conn.session.auth.invalidate()
            return _Transient('no', 'HTTP 401 (token renewed)', status, retry_after=0)
        if status in TRANSIENT_STATUSES:
            # 429 means the request was not processed; a 5xx from a proxy or the service may have been.
            return _Transient('no' if status == 429 else 'maybe', _service_message(response), status,
                              retry_after=_retry_after(response))
        cls = ResourceNotFound if status == 404 else RequestFailed
        message = _service_message(response)
        raise cls('%s refused %s %s (HTTP %d): %s' % (SERVICE_NAMES.get(service, service), method, path, status, message),
                  service=service, method=method, path=path, http_status=status,
                  service_message=message, attempts=attempt, sent='yes')

    def _classify_exception(self, service, method, path, error):
        if ksa_exceptions is not None:
            if isinstance(error, ksa_exceptions.SSLError):
                raise ConnectionFailed(
                    'TLS to OpenStack (%s) failed: no verified TLS session with %s (%s). Check the CA '
                    'bundle (ca_cert, or cacert in clouds.yaml) and that the URL names the host the certificate is '
                    'for; validate_certs=false only for a test cloud.'
                    % (self.cloud_label, self._endpoint_named(error, service), _first_line(error)), service=service)
            if isinstance(error, (ksa_exceptions.ConnectionError, ksa_exceptions.RetriableConnectionFailure)):
                message = _first_line(error)
                if self._at_auth_url(error):
                    message = ('the identity endpoint %s of %s does not answer (%s). Check auth_url and that this '
                               'host reaches Keystone (proxy, firewall)' % (self.auth_url(), self.cloud_label, message))
                return _Transient('no' if _never_sent(error) else 'maybe', message, None)
            if isinstance(error, ksa_exceptions.Unauthorized):
                raise RequestFailed('Authentication to OpenStack (%s, auth_url %s) failed: the credentials were refused '
                                    '(HTTP 401). Check the username and password (or application credential), the '
                                    'project and the user and project domains of %s. (%s %s %s: %s)'
                                    % (self.cloud_label, self.auth_url() or 'unknown', self.cloud_label,
                                       SERVICE_NAMES.get(service, service), method, path, _first_line(error)),
                                    service='identity', method=method, path=path, http_status=401,
                                    service_message=_first_line(error), attempts=1, sent='no')
            if isinstance(error, ksa_exceptions.EndpointNotFound):
                raise ConnectionFailed('No %s endpoint in the service catalog: %s'
                                       % (SERVICE_NAMES.get(service, service), _first_line(error)),
                                       service=service)
            if isinstance(error, ksa_exceptions.HttpError) and error.http_status in TRANSIENT_STATUSES:
                # Authentication itself met a transient failure (Keystone behind a proxy): nothing was sent yet.
                return _Transient('no', _first_line(error), error.http_status)
        raise RequestFailed('%s request %s %s failed: %s' % (SERVICE_NAMES.get(service, service), method, path,
                                                             _first_line(error)),
                            service=service, method=method, path=path, http_status=None,
                            service_message=_first_line(error), attempts=1, sent='maybe')

    def _at_auth_url(self, error):
        auth_url = self.auth_url()
        return bool(auth_url) and auth_url.rstrip('/') in str(error)

    def _endpoint_named(self, error, service):
        return 'the identity endpoint %s' % self.auth_url() if self._at_auth_url(error) else \
            'the %s endpoint' % SERVICE_NAMES.get(service, service)

    def _verified(self, verify, service, method, path, failure, attempt):
        """Ask the caller's read whether the ambiguous action took effect."""
        try:
            return bool(verify())
        except (RequestFailed, ConnectionFailed) as error:
            raise self._error(ServiceUnavailable, service, method, path, failure, attempt,
                              extra=' It may have reached the service, and reading whether it took effect also '
                                    'failed: %s' % error.msg)

    def _error(self, cls, service, method, path, failure, attempt, extra=''):
        what = 'HTTP %d' % failure.status if failure.status else 'no answer'
        return cls('%s %s %s failed (%s: %s) after %d attempt%s.%s'
                   % (SERVICE_NAMES.get(service, service), method, path, what, failure.message, attempt,
                      '' if attempt == 1 else 's', extra),
                   service=service, method=method, path=path, http_status=failure.status,
                   service_message=failure.message, attempts=attempt, sent=failure.sent)


class _Transient(object):
    """One attempt that met a transient failure."""

    def __init__(self, sent, message, status, retry_after=None):
        self.sent, self.message, self.status, self.retry_after = sent, message, status, retry_after


def _never_sent(error):
    """True when the exception chain shows the connection was never made (refused, connect timeout)."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        name = type(current).__name__
        if name in ('NewConnectionError', 'ConnectTimeoutError', 'ConnectionRefusedError', 'NameResolutionError'):
            return True
        if isinstance(current, ConnectionRefusedError):
            return True
        stack.extend([current.__cause__, current.__context__, getattr(current, 'reason', None)])
        stack.extend(arg for arg in getattr(current, 'args', ()) if isinstance(arg, BaseException))
    return False


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _service_message(response):
    """The service's own words from an error body: Nova's {"badRequest": {"message"}}, Placement's
    {"errors": [{"detail"}]}, Glance's and Cinder's variants, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get('errors'), list) and body['errors']:
            first = body['errors'][0]
            return str(first.get('detail') or first.get('title') or first)[:300]
        if 'message' in body:
            return str(body['message'])[:300]
        for value in body.values():
            if isinstance(value, dict) and 'message' in value:
                return str(value['message'])[:300]
    text = (getattr(response, 'text', '') or '').strip()
    return text.splitlines()[0][:300] if text else 'HTTP %s' % response.status_code


def _retry_after(response):
    value = (getattr(response, 'headers', None) or {}).get('Retry-After')
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return max(0.0, email.utils.mktime_tz(parsed) - time.time()) if parsed else None
