# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Launch a server that does not exist yet: from an image, a snapshot, or a bootable volume.

Idempotent by name: an existing server of that name is left as it is and reported.  A launch
that ends in ERROR is deleted again (unless asked to keep it), so a failed launch leaves
nothing broken behind, and the failure quotes Nova's fault.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceFailed, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until

LaunchRequest = collections.namedtuple(
    'LaunchRequest', 'name image snapshot volume boot_volume_size delete_volume_on_termination flavor '
                     'networks key_name metadata availability_zone keep_failed wait timeout')


def validate_launch_request(model, request):
    if model.name != 'openstack':
        raise InvalidRequest('Launching is supported on the OpenStack backend only, not on %s.' % model.name)
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


def ensure_launched(backend, request, check_mode=False):
    validate_launch_request(backend.model, request)
    deadline = Deadline(request.timeout)
    existing = backend.find(request.name)
    if existing is not None:
        observation = backend.observe(existing)
        return _result(backend, observation, [], False, deadline)
    body = server_body(backend, request)        # resolves names: a bad one fails before anything is created
    if check_mode:
        return _result(backend, None, ['create'], True, deadline, body=body)
    server_id = backend.create_server(body)
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
                backend.perform(server_id, 'delete')
                error.msg += ' The failed server was deleted (keep_failed=true keeps it for inspection).'
            error.details['id'] = server_id
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
