# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error types of the collection.

Every failure a module reports is one of these: a message an operator can act
on, plus structured details that end up beside it in the module result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class VmopsError(Exception):
    """Base class: `msg` is for humans, `details` (a dict) goes into the result."""

    def __init__(self, msg, **details):
        super(VmopsError, self).__init__(msg)
        self.msg = msg
        self.details = details


class InvalidRequest(VmopsError):
    """The arguments are wrong or contradict each other; nothing was touched."""


class ConnectionFailed(VmopsError):
    """The hypervisor or cloud could not be reached; nothing was touched."""


class InstanceNotFound(VmopsError):
    """The named instance does not exist."""


class InstanceLocked(VmopsError):
    """The instance is locked and the caller did not ask to unlock it."""


class UnreachableState(VmopsError):
    """No legal sequence of verbs leads from the current state to the wanted one."""


class WaitTimeout(VmopsError):
    """A wait ran out of time; details hold the last state seen and the time spent."""


class InstanceFailed(VmopsError):
    """The instance went into an error state while we waited on it."""


class BackendError(VmopsError):
    """The hypervisor or cloud refused or failed an operation."""


class RequestFailed(BackendError):
    """A request the service refused, or that could not be completed.

    `details` (the contract in docs/dev/architecture.md): `service` (compute, placement, image,
    block_storage, network, identity, libvirt), `method`, `path` (no query string, no secrets),
    `http_status` (None when no answer came), `service_message` (the service's own text),
    `attempts`, and `sent`: `no` (provably never reached the service), `maybe` or `yes`.
    """

    @property
    def http_status(self):
        return self.details.get('http_status')

    @property
    def sent(self):
        return self.details.get('sent')

    @property
    def service(self):
        return self.details.get('service')


class ResourceNotFound(RequestFailed):
    """HTTP 404, or libvirt's "no such domain"."""


class ServiceUnavailable(RequestFailed):
    """Transient failures kept coming until the retry budget ran out."""
