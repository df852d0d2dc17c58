# -*- coding: utf-8 -*-
"""The fakes the unit tests share: one fake clock, one fake cloud (the compute API), the stand-ins
for a backend that the neutral families only ask for its model's name and an instance's existence,
and the request builders that the neutral and the backend tests of one family both use.

Import them as `ansible_collections.vmops.lifecycle.tests.unit.fakes`; conftest.py puts the checkout
there and offers a `clock` fixture.  Nothing here imports a backend library.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import RescueRequest


# The clock -----------------------------------------------------------------------------------

class FakeClock(object):
    """Fake time: `now` moves only when the code sleeps (or a test moves it), so tests never wait and
    times are exact.

    One object serves every clock the code takes: call it (or `monotonic()`) for the monotonic clock
    (waiter, engine, Deadline), `wall()` for the wall clock (`WALL_OFFSET` ahead of `now`), `sleep()` to
    let time pass.  Every sleep is recorded in `sleeps`, and a negative one fails the test.
    """

    WALL_OFFSET = 1700000000.0

    def __init__(self, now=1000.0):
        self.now = now
        self.sleeps = []

    def __call__(self):
        return self.now

    def monotonic(self):
        return self.now

    def wall(self):
        return self.WALL_OFFSET + self.now

    def sleep(self, seconds):
        assert seconds >= 0, 'slept a negative time: %r' % (seconds,)
        self.sleeps.append(seconds)
        self.now += seconds


# The cloud (the compute API as the SDK's adapter sees it) ------------------------------------

class Response(object):
    """An HTTP answer as keystoneauth returns it: JSON body, status; an error carries Nova's shape."""

    def __init__(self, body, status=200):
        self.body, self.status_code = body, status
        self.headers = {'content-type': 'application/json'} if status >= 400 else {}
        self.text = ''
        self.content = b'x' if status >= 400 else b''
        self.reason = 'Conflict' if status == 409 else ''
        self.url = 'http://nova'
        self.request = None

    def json(self):
        return self.body


class FakeCompute(object):
    """The compute adapter: answers from a table, refuses chosen server actions, records every request."""

    def __init__(self, answers):
        self.answers = answers      # (method, url) -> body
        self.refused = {}           # server action verb (first key of the body) -> (HTTP status, Nova's message)
        self.sent = []
        self.params = []            # the query parameters of each request, in order
        self.date = None            # the Date header of every answer (None: no header)

    def request(self, url, method, microversion=None, **kwargs):
        self.sent.append((method, url, kwargs.get('json'), microversion))
        self.params.append(kwargs.get('params'))
        body = kwargs.get('json')
        if method == 'POST' and isinstance(body, dict) and body and list(body)[0] in self.refused:
            status, message = self.refused[list(body)[0]]
            return Response({'conflictingRequest': {'code': status, 'message': message}}, status)
        response = Response(self.answers.get((method, url), {}), 202 if method == 'POST' else 200)
        if self.date:
            response.headers['Date'] = self.date
        return response


class FakeConnection(object):
    """An SDK connection as the request layer uses it: one adapter per service, no session."""

    def __init__(self, compute):
        self.compute = compute
        self.session = None

    def close(self):
        pass


def FakeCloud(answers=None):   # noqa: N802 (reads as the class it stands for)
    """The real OpenStackBackend over the real request layer over a fake compute adapter: `.compute`
    is the FakeCompute that records what was sent."""
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import OpenStackBackend
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.request import RequestLayer
    compute = FakeCompute(answers or {})
    backend = OpenStackBackend({}, requests=RequestLayer(FakeConnection(compute), sleep=lambda seconds: None))
    backend.compute = compute
    backend.location = lambda: 'fake cloud'
    return backend


# Stand-ins for a backend, for the neutral families --------------------------------------------

class NamedModel(object):
    """A backend model that has only its name: enough for the checks that ask which backend it is."""

    def __init__(self, name):
        self.name = name


NAMED_LIBVIRT, NAMED_OPENSTACK = NamedModel('libvirt'), NamedModel('openstack')


class FinderBackend(object):
    """A backend that only finds an instance (or not): the family's driver does the rest."""

    def __init__(self, model, exists=True):
        self.model = model
        self.exists = exists

    def find(self, identifier):
        return identifier if self.exists else None

    def location(self):
        return 'test://'

    def request_count(self):
        return None


# Requests ------------------------------------------------------------------------------------

def rescue_request(**changes):
    """An instance_rescue request for web1 with every option unset; `changes` sets some."""
    base = dict(identifier='web1', wanted='rescued', rescue_image=None, admin_password=None, rescue_kernel=None,
                rescue_initrd=None, rescue_cmdline=None, rescue_disk_mib=None, shutdown_timeout=None, wait=True,
                timeout=60)
    base.update(changes)
    return RescueRequest(**base)
