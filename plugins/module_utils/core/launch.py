# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Launch a server that does not exist yet: from an image, a snapshot, or a bootable volume (OpenStack), or
a domain from a base disk image copied or overlaid (libvirt, libvirt/launch.py).

Idempotent by name: an existing server of that name is left as it is and reported.  A launch
that ends in ERROR is deleted again (unless asked to keep it), so a failed launch leaves
nothing broken behind, and the failure quotes Nova's fault.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceFailed, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until

LaunchRequest = collections.namedtuple(
    'LaunchRequest', 'name image snapshot volume boot_volume_size delete_volume_on_termination flavor '
                     'networks key_name metadata availability_zone keep_failed wait timeout '
                     'memory_mib vcpus disk_mode domain_type pool')
# The libvirt-only fields default to None, so that callers that launch on OpenStack need not name them.
LaunchRequest.__new__.__defaults__ = (None,) * 5

LIBVIRT_ONLY = ('memory_mib', 'vcpus', 'disk_mode', 'domain_type', 'pool')
OPENSTACK_ONLY = ('snapshot', 'volume', 'boot_volume_size', 'flavor', 'key_name', 'metadata', 'availability_zone')


class Launcher(abc.ABC):
    """What a backend does to launch: plan (reads only; a bad name fails here, and check mode reports the
    plan), create (returns the instance as the backend's observe() takes it), discard (a failed launch)."""

    @classmethod
    @abc.abstractmethod
    def for_request(cls, backend, request):
        """The launcher for this run."""

    @abc.abstractmethod
    def plan(self, request):
        """A JSON-able dict of what would be created."""

    @abc.abstractmethod
    def create(self, plan):
        """Create and start it; returns the instance reference."""

    @abc.abstractmethod
    def discard(self, ref):
        """Remove a launch that failed, with what it created."""


class ServerCreate(Launcher):
    """OpenStack: one POST /servers (server_body)."""

    @classmethod
    def for_request(cls, backend, request):
        return cls(backend)

    def __init__(self, backend):
        self.backend = backend

    def plan(self, request):
        return server_body(self.backend, request)

    def create(self, plan):
        return self.backend.create_server(plan)

    def discard(self, ref):
        self.backend.perform(ref, 'delete')


def validate_launch_request(model, request):
    if model.name == 'libvirt':
        return _validate_libvirt(request)
    if model.name != 'openstack':
        raise InvalidRequest('Launching is not supported on %s.' % model.name)
    given = [name for name in LIBVIRT_ONLY if getattr(request, name) is not None]
    if given:
        raise InvalidRequest('%s appl%s to the libvirt backend only; on OpenStack the flavor gives memory and vCPUs.'
                             % (', '.join(given), 'ies' if len(given) == 1 else 'y'))
    if not request.flavor:
        raise InvalidRequest('flavor is required on OpenStack.')
    sources = [key for key in ('image', 'snapshot', 'volume') if getattr(request, key)]
    if len(sources) != 1:
        raise InvalidRequest('Give exactly one of image, snapshot or volume to launch from (got %s).'
                             % (', '.join(sources) or 'none'))
    if request.boot_volume_size is not None and request.volume:
        raise InvalidRequest('boot_volume_size creates a volume from an image or snapshot; '
                             'with volume the server boots from that volume as it is.')
    if request.boot_volume_size is not None and request.boot_volume_size <= 0:
        raise InvalidRequest('boot_volume_size must be a positive number of GB.')
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)


def _validate_libvirt(request):
    given = [name for name in OPENSTACK_ONLY if getattr(request, name)]
    if given:
        raise InvalidRequest('%s appl%s to the OpenStack backend only; on libvirt a domain is launched from a base '
                             'disk image (image: its path on the host) with memory_mib and vcpus.'
                             % (', '.join(given), 'ies' if len(given) == 1 else 'y'))
    if not request.image:
        raise InvalidRequest('image is required on libvirt: the path, on the host, of a base disk image in one of its '
                             'storage pools.')
    for name in ('memory_mib', 'vcpus'):
        value = getattr(request, name)
        if value is None or value < 1:
            raise InvalidRequest('%s is required on libvirt and must be at least 1, got %s.' % (name, value))
    if request.disk_mode not in (None, 'copy', 'overlay'):
        raise InvalidRequest("disk_mode must be copy or overlay, not '%s'." % request.disk_mode)
    if request.domain_type not in (None, 'kvm', 'qemu'):
        raise InvalidRequest("domain_type must be kvm or qemu, not '%s'." % request.domain_type)
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)
    return None


def server_body(backend, request):
    """The POST /servers body, with every name resolved to an ID (read-only calls)."""
    body = {'name': request.name, 'flavorRef': backend.resolve('flavor', request.flavor).id}
    if request.networks:
        body['networks'] = [{'uuid': backend.resolve('network', net).id} for net in request.networks]
    else:
        body['networks'] = 'auto'
    if request.image or request.snapshot:
        image = backend.resolve('image', request.image or request.snapshot)
        properties = getattr(image, 'properties', None) or {}
        if request.snapshot and properties.get('image_type') != 'snapshot':
            raise InvalidRequest('Image %s is not a snapshot; pass it as image.' % request.snapshot)
        if image.status != 'active':
            raise InvalidRequest('Image %s is %s, not active.' % (image.name, image.status))
        if request.boot_volume_size:
            body['imageRef'] = ''
            body['block_device_mapping_v2'] = [{
                'boot_index': 0, 'uuid': image.id, 'source_type': 'image', 'destination_type': 'volume',
                'volume_size': request.boot_volume_size,
                'delete_on_termination': request.delete_volume_on_termination}]
        else:
            body['imageRef'] = image.id
    else:
        volume = backend.resolve('volume', request.volume)
        body['imageRef'] = ''
        body['block_device_mapping_v2'] = [{
            'boot_index': 0, 'uuid': volume.id, 'source_type': 'volume', 'destination_type': 'volume',
            'delete_on_termination': request.delete_volume_on_termination}]
    if request.key_name:
        body['key_name'] = request.key_name
    if request.metadata:
        body['metadata'] = dict((str(k), str(v)) for k, v in request.metadata.items())
    if request.availability_zone:
        body['availability_zone'] = request.availability_zone
    return body


def ensure_launched(backend, request, check_mode=False, launcher=None):
    validate_launch_request(backend.model, request)
    launcher = launcher or ServerCreate(backend)
    deadline = Deadline(request.timeout)
    existing = backend.find(request.name)
    if existing is not None:
        observation = backend.observe(existing)
        return _result(backend, observation, [], False, deadline)
    body = launcher.plan(request)           # resolves names: a bad one fails before anything is created
    if check_mode:
        return _result(backend, None, ['create'], True, deadline, body=body)
    server_id = launcher.create(body)
    observation = backend.observe(server_id)
    if request.wait:
        try:
            observation = wait_until(
                lambda: backend.observe(server_id),
                lambda o: o.state == states.RUNNING and not o.task,
                describe, 'server %s to become active' % request.name, deadline,
                failure=lambda o: ('the launch failed: %s' % o.fault) if o.state == states.ERROR else None)
        except InstanceFailed as error:
            if not request.keep_failed:
                launcher.discard(server_id)
                error.msg += ' The failed server was deleted (keep_failed=true keeps it for inspection).'
            error.details['id'] = observation.id if observation is not None else None
            raise
    return _result(backend, observation, ['create'], True, deadline)


def _result(backend, observation, plan, changed, deadline, body=None):
    instance = {
        'name': observation.name if observation else (body or {}).get('name'),
        'id': observation.id if observation else None,
        'backend': backend.model.name, 'location': backend.location(),
        'state': observation.state if observation else states.ABSENT,
        'plan': plan, 'elapsed': round(deadline.elapsed(), 3),
        'api_requests': backend.request_count(),
        'details': dict(observation.details) if observation else {},
    }
    result = {'changed': changed, 'instance': instance,
              'diff': {'before': {'exists': not changed}, 'after': {'exists': True}}}
    if body is not None:
        result['request_body'] = body
    return result
