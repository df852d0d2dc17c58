# -*- coding: utf-8 -*-
"""The request layer against a fake transport that injects resets, 503 bursts, 429s and 401s."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytest.importorskip('openstack')

from keystoneauth1 import exceptions as ksa  # noqa: E402
from requests.exceptions import ConnectionError as RequestsConnectionError  # noqa: E402
from urllib3.exceptions import NewConnectionError, ProtocolError  # noqa: E402

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (  # noqa: E402
    ConnectionFailed, RequestFailed, ResourceNotFound, ServiceUnavailable)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import request as request_module  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.request import RequestLayer  # noqa: E402


class Answer(object):
    def __init__(self, status=200, body=None, headers=None):
        self.status_code = status
        self._body = body if body is not None else {}
        self.headers = headers or {}
        self.content = b'{}'
        self.text = ''

    def json(self):
        return self._body


def refused():
    """What keystoneauth raises when the connection is refused: nothing reached the service."""
    try:
        try:
            raise RequestsConnectionError(NewConnectionError(None, 'Connection refused'))
        except RequestsConnectionError:
            raise ksa.ConnectFailure('Unable to establish connection: Connection refused')
    except ksa.ConnectFailure as error:
        return error


def reset():
    """A reset after the request was written: it may have reached the service."""
    try:
        try:
            raise RequestsConnectionError(ProtocolError('Connection aborted.', ConnectionResetError(104, 'reset')))
        except RequestsConnectionError:
            raise ksa.ConnectFailure('Unable to establish connection: Connection aborted')
    except ksa.ConnectFailure as error:
        return error


class Transport(object):
    """One service adapter: plays a script of outcomes (an Answer or an exception), then answers 200."""

    def __init__(self, script=None):
        self.script = list(script or [])
        self.sent = []

    def request(self, path, method, **kwargs):
        self.sent.append((method, path, kwargs.get('microversion'), kwargs.get('connect_retries')))
        outcome = self.script.pop(0) if self.script else Answer()
        if isinstance(outcome, Exception):
            raise outcome   # pylint: disable=raising-non-exception
        return outcome


class Auth(object):
    def __init__(self):
        self.invalidated = 0

    def invalidate(self):
        self.invalidated += 1


class Session(object):
    def __init__(self):
        self.auth = Auth()

    def request(self, url, method, *args, **kwargs):
        raise AssertionError('the layer calls the service adapters')


class Connection(object):
    def __init__(self, **services):
        self.session = Session()
        for name, transport in services.items():
            setattr(self, name, transport)

    def close(self):
        pass


def layer(clock, budget=60, **services):
    return RequestLayer(Connection(**services), retry_budget=budget, clock=clock, sleep=clock.sleep,
                        jitter=lambda: 1.0)


def test_a_read_is_retried_through_a_503_burst_and_resets(clock):
    compute = Transport([Answer(503), Answer(503), reset(), Answer(502), Answer(200, {'server': {'id': 'a'}})])
    requests = layer(clock, compute=compute)
    assert requests.json('compute', 'GET', '/servers/a', microversion='2.73') == {'server': {'id': 'a'}}
    assert len(compute.sent) == 5
    assert all(sent[2] == '2.73' and sent[3] == 0 for sent in compute.sent)  # keystoneauth never retries itself
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]     # exponential (jitter 1.0 here), capped at 8
    assert requests.retries == 4


def test_backoff_is_capped_and_the_budget_ends_the_retries(clock):
    compute = Transport([Answer(503)] * 100)
    requests = layer(clock, budget=30, compute=compute)
    with pytest.raises(ServiceUnavailable) as failure:
        requests.call('compute', 'GET', '/servers/detail')
    assert max(clock.sleeps) == 8.0
    assert sum(clock.sleeps) <= 30
    details = failure.value.details
    assert details['http_status'] == 503 and details['method'] == 'GET' and details['path'] == '/servers/detail'
    assert details['attempts'] == len(compute.sent) and 'retry_budget 30 s' in failure.value.msg


def test_the_run_deadline_bounds_the_retries(clock):
    compute = Transport([Answer(503)] * 100)
    requests = layer(clock, budget=600, compute=compute)
    requests.deadline = Deadline(5, clock=clock)
    with pytest.raises(ServiceUnavailable):
        requests.call('compute', 'GET', '/servers')
    assert sum(clock.sleeps) <= 5


def test_429_honours_retry_after_and_an_action_is_resent(clock):
    compute = Transport([Answer(429, headers={'Retry-After': '3'}), Answer(202)])
    requests = layer(clock, compute=compute)
    requests.call('compute', 'POST', '/servers/a/action', json={'os-stop': None})
    assert [sent[0] for sent in compute.sent] == ['POST', 'POST']   # a 429 was not processed
    assert clock.sleeps == [3.0]


def test_an_action_whose_connection_was_refused_is_resent(clock):
    compute = Transport([refused(), Answer(202)])
    requests = layer(clock, compute=compute)
    requests.call('compute', 'POST', '/servers/a/action', json={'pause': None})
    assert len(compute.sent) == 2


def test_an_ambiguous_action_without_verify_is_never_sent_twice(clock):
    compute = Transport([Answer(503)])
    requests = layer(clock, compute=compute)
    with pytest.raises(RequestFailed) as failure:
        requests.call('compute', 'POST', '/servers/a/action', json={'pause': None})
    assert len(compute.sent) == 1
    assert failure.value.details['sent'] == 'maybe'
    assert 'not sent again' in failure.value.msg


def test_an_ambiguous_action_that_took_effect_is_not_resent(clock):
    compute = Transport([reset()])
    requests = layer(clock, compute=compute)
    assert requests.call('compute', 'POST', '/servers/a/action', json={'pause': None}, verify=lambda: True) is None
    assert len(compute.sent) == 1


def test_an_ambiguous_action_that_did_not_take_effect_is_resent(clock):
    compute = Transport([Answer(503), Answer(503), Answer(202)])
    checks = []
    requests = layer(clock, compute=compute)
    response = requests.call('compute', 'POST', '/servers/a/action', json={'pause': None},
                             verify=lambda: checks.append(1) and False)
    assert response.status_code == 202 and len(compute.sent) == 3 and len(checks) == 2


def test_a_verify_read_that_fails_too_says_so(clock):
    compute = Transport([Answer(503)])
    requests = layer(clock, compute=compute)

    def verify():
        raise ServiceUnavailable('Compute GET /servers/a failed', http_status=503)
    with pytest.raises(ServiceUnavailable) as failure:
        requests.call('compute', 'DELETE', '/servers/a', verify=verify)
    assert failure.value.details['sent'] == 'maybe' and 'reading whether it took effect also failed' in failure.value.msg


def test_an_expired_token_is_renewed_once(clock):
    compute = Transport([Answer(401), Answer(200, {'ok': 1})])
    requests = layer(clock, compute=compute)
    assert requests.json('compute', 'POST', '/servers/a/action') == {'ok': 1}
    assert requests.conn.session.auth.invalidated == 1
    compute.script = [Answer(401)]
    with pytest.raises(RequestFailed) as failure:
        requests.call('compute', 'GET', '/servers')
    assert failure.value.details['http_status'] == 401


def test_errors_carry_status_method_path_and_the_services_message(clock):
    compute = Transport([Answer(409, {'conflictingRequest': {'code': 409, 'message': "Cannot 'pause' instance"}}),
                         Answer(404, {'itemNotFound': {'message': 'Instance a could not be found.'}})])
    placement = Transport([Answer(400, {'errors': [{'status': 400, 'detail': 'bad resources'}]})])
    requests = layer(clock, compute=compute, placement=placement)
    with pytest.raises(RequestFailed) as conflict:
        requests.call('compute', 'POST', '/servers/a/action', json={'pause': None})
    assert conflict.value.details['http_status'] == 409
    assert conflict.value.details['service_message'] == "Cannot 'pause' instance"
    assert "HTTP 409" in conflict.value.msg and 'POST /servers/a/action' in conflict.value.msg
    with pytest.raises(ResourceNotFound):
        requests.call('compute', 'GET', '/servers/a')
    with pytest.raises(RequestFailed) as bad:
        requests.call('placement', 'GET', '/allocation_candidates', microversion='1.29')
    assert bad.value.details['service'] == 'placement' and bad.value.details['service_message'] == 'bad resources'
    assert not clock.sleeps     # none of these is transient


def test_no_retry_with_a_zero_budget(clock):
    compute = Transport([Answer(503), Answer(200)])
    requests = layer(clock, budget=0, compute=compute)
    with pytest.raises(ServiceUnavailable):
        requests.call('compute', 'GET', '/servers')
    assert len(compute.sent) == 1


def test_counts_by_service(clock):
    compute, image = Transport([Answer(503)]), Transport()
    requests = layer(clock, compute=compute, image=image)
    requests.call('compute', 'GET', '/servers')
    requests.call('image', 'GET', '/images')
    assert requests.by_service == {'compute': 2, 'image': 1}


class Config(object):
    config = {'auth': {'auth_url': 'https://keystone.example:5000/v3'}}


def named_layer(clock, **services):
    requests = layer(clock, budget=2, **services)
    requests.conn.config = Config()
    requests.cloud_label = request_module.cloud_label({'cloud': 'production'})
    return requests


def test_a_wrong_password_names_the_cloud_and_what_to_check(clock):
    requests = named_layer(clock, compute=Transport([ksa.Unauthorized('The request you have made requires authentication')]))
    with pytest.raises(RequestFailed) as caught:
        requests.call('compute', 'GET', '/servers')
    for text in ('cloud production', 'https://keystone.example:5000/v3', 'credentials were refused', 'password'):
        assert text in caught.value.msg
    assert 'Unexpected' not in caught.value.msg and caught.value.details['http_status'] == 401


def test_an_unreachable_auth_url_is_named(clock):
    failure = ksa.ConnectFailure('Unable to establish connection to https://keystone.example:5000/v3/auth/tokens')
    requests = named_layer(clock, compute=Transport([failure] * 20))
    with pytest.raises(ServiceUnavailable) as caught:
        requests.call('compute', 'GET', '/servers')
    for text in ('identity endpoint https://keystone.example:5000/v3 of cloud production does not answer',
                 'Check auth_url'):
        assert text in caught.value.msg


def test_a_failed_tls_verification_is_named(clock):
    failure = ksa.SSLError('SSL exception connecting to https://keystone.example:5000/v3/auth/tokens: '
                           'CERTIFICATE_VERIFY_FAILED')
    requests = named_layer(clock, compute=Transport([failure]))
    with pytest.raises(ConnectionFailed) as caught:
        requests.call('compute', 'GET', '/servers')
    for text in ('TLS to OpenStack (cloud production)', 'identity endpoint https://keystone.example:5000/v3',
                 'ca_cert', 'CERTIFICATE_VERIFY_FAILED'):
        assert text in caught.value.msg
    assert len(requests.conn.compute.sent) == 1     # never retried


def test_cloud_label():
    assert request_module.cloud_label({'cloud': {'auth': {}}}) == 'the cloud given as a dict'
