# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rescue on OpenStack: Nova's rescue/unrescue actions at compute microversion 2.87.

2.87 is what allows a stable-device rescue of a volume-backed server.  Nova only does that when
the rescue image has both hw_rescue_bus and hw_rescue_device and the server's compute node
reports the trait COMPUTE_RESCUE_BFV in Placement; everything that can be checked is checked
here first, so a rescue Nova would refuse is refused before any request that changes anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InvalidRequest, RequestFailed, ResourceNotFound)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import observation_from_server
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import RescueStatus, Rescuer
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until

# 2.87: stable-device rescue of volume-backed servers.
RESCUE_MICROVERSION = '2.87'
PLACEMENT_MICROVERSION = '1.29'
BFV_TRAIT = 'COMPUTE_RESCUE_BFV'
RESCUE_PROPERTIES = ('hw_rescue_bus', 'hw_rescue_device')
RESCUABLE = (states.RUNNING, states.STOPPED, states.ERROR)


class OpenStackRescuer(Rescuer):

    def __init__(self, backend):
        self.backend = backend
        self.conn = backend.conn

    # Reading ---------------------------------------------------------------------------------

    def _server(self, server_id):
        return self.backend.nova('GET', '/servers/%s' % server_id, microversion=RESCUE_MICROVERSION).json()['server']

    def status(self, server_id, body=None):
        body = body or self._server(server_id)
        observation = observation_from_server(body)
        details = dict(observation.details)
        details['volume_backed'] = is_volume_backed(self.backend.requests, body)
        return RescueStatus(observation.name, observation.id, observation.state, observation.state == states.RESCUED,
                            locked=details.get('locked'), locked_reason=details.get('locked_reason'),
                            details=details), observation

    def settled(self, server_id, deadline):
        status, observation = self.status(server_id)
        if observation.task:
            wait_until(lambda: self.status(server_id)[1], lambda o: not o.task, describe,
                       'server %s to finish %s' % (observation.name, observation.task), deadline)
            status, observation = self.status(server_id)
        return status

    def safe_status(self, server_id):
        try:
            return self.status(server_id)[0]
        except Exception:  # pylint: disable=broad-except
            return None

    # Planning --------------------------------------------------------------------------------

    def prepare(self, server_id, status, request):
        if status.state in (states.SHELVED, states.SHELVED_OFFLOADED):
            raise InvalidRequest('%s is %s; Nova cannot rescue a shelved server. Unshelve it first '
                                 '(vmops.lifecycle.instance_state state=running); nothing was changed.'
                                 % (status.name, status.state), state=status.state)
        if status.state not in RESCUABLE:
            raise InvalidRequest('%s is %s; Nova rescues only running, stopped or errored servers. Nothing was '
                                 'changed.' % (status.name, status.state), state=status.state)
        image = None
        if request.rescue_image is not None:
            image = self.backend.resolve('image', request.rescue_image)
            if image.status != 'active':
                raise InvalidRequest('Rescue image %s is %s, not active.' % (image.name, image.status))
            if (getattr(image, 'properties', None) or {}).get('img_block_device_mapping') or \
                    getattr(image, 'block_device_mapping', None):
                raise InvalidRequest('Rescue image %s is the snapshot of a volume-backed server; Nova cannot '
                                     'rescue from such an image.' % image.name)
        properties = _image_properties(image) if image is not None else self._own_image_properties(status)
        stable = all(properties.get(key) for key in RESCUE_PROPERTIES)
        prepared = {'image': image.id if image is not None else None, 'image_name': image.name if image else None,
                    'stable_device': stable, 'disks': _layout(stable, properties)}
        if status.details.get('volume_backed'):
            if not stable:
                raise InvalidRequest(
                    '%s is volume-backed: Nova rescues it only the stable-device way (microversion 2.87), which '
                    'needs a rescue_image with the properties hw_rescue_bus and hw_rescue_device; %s has %s. '
                    'Nothing was changed.' % (status.name, prepared['image_name'] or 'its image',
                                              ', '.join(k for k in RESCUE_PROPERTIES if properties.get(k)) or 'neither'))
            prepared['trait_check'] = self._check_bfv_trait(status)
        return prepared

    def check_unrescuable(self, server_id, status):
        return None

    def _own_image_properties(self, status):
        body = self._server(status.id)
        image_ref = (body.get('image') or {}).get('id') if isinstance(body.get('image'), dict) else None
        if not image_ref:
            return {}
        try:
            return _image_properties(self.backend.resolve('image', image_ref))
        except InvalidRequest:
            return {}

    def _check_bfv_trait(self, status):
        """Does the server's compute node report COMPUTE_RESCUE_BFV?  Refuses when it does not."""
        node = status.details.get('hypervisor_hostname') or self._hypervisor_hostname(status.id)
        if not node:
            return 'not checked: the credentials cannot see the compute node (Nova decides)'
        placement = self.backend.requests
        try:
            found = placement.json('placement', 'GET', '/resource_providers', params={'name': node},
                                   microversion=PLACEMENT_MICROVERSION)['resource_providers']
            if not found:
                return 'not checked: no resource provider named %s' % node
            traits = placement.json('placement', 'GET', '/resource_providers/%s/traits' % found[0]['uuid'],
                                    microversion=PLACEMENT_MICROVERSION)
        except RequestFailed as error:
            if error.details.get('http_status') in (401, 403):
                return 'not checked: Placement is not readable with these credentials (Nova decides)'
            error.msg = 'Reading the traits of %s from Placement failed: %s' % (node, error.msg)
            raise
        if BFV_TRAIT not in traits['traits']:
            raise InvalidRequest(
                '%s is volume-backed and its compute node %s does not report the trait %s in Placement: Nova '
                'would refuse the rescue ("Host unable to rescue a volume-backed instance"). Move the server to a '
                'host whose driver supports it (libvirt does). Nothing was changed.'
                % (status.name, node, BFV_TRAIT), host=node)
        return '%s reports %s' % (node, BFV_TRAIT)

    def _hypervisor_hostname(self, server_id):
        return self._server(server_id).get('OS-EXT-SRV-ATTR:hypervisor_hostname')

    # Acting ----------------------------------------------------------------------------------

    def rescue(self, server_id, before, prepared, request, deadline):
        body = {}
        if prepared['image']:
            body['rescue_image_ref'] = prepared['image']
        if request.admin_password:
            body['adminPass'] = request.admin_password
        self.backend.server_action(server_id, 'rescue', {'rescue': body or None}, name=before.name,
                                   microversion=RESCUE_MICROVERSION)
        after = self._wait(server_id, before.name, states.RESCUED, 'rescue', request, deadline)
        return after._replace(image=prepared['image_name'] or prepared['image'], stable_device=prepared['stable_device'],
                              disks=prepared['disks'],
                              steps={'trait_check': prepared['trait_check']} if 'trait_check' in prepared else None)

    def unrescue(self, server_id, before, request, deadline):
        self.backend.server_action(server_id, 'unrescue', {'unrescue': None}, name=before.name,
                                   microversion=RESCUE_MICROVERSION)
        return self._wait(server_id, before.name, states.RUNNING, 'unrescue', request, deadline)

    def _wait(self, server_id, name, wanted, verb, request, deadline):
        if not request.wait:
            return self.status(server_id)[0]

        def failure(observation):
            if observation.state == states.ERROR:
                return 'the server is in error: %s' % observation.fault
            if not observation.task and observation.state != wanted:
                # Nova sets the task before it answers: no task and not there means the compute gave up.
                return 'Nova ended the %s with the server %s; see its instance actions (server event list)' % (
                    verb, observation.state)
            return None
        wait_until(lambda: self.status(server_id)[1], lambda o: o.state == wanted and not o.task, describe,
                   'server %s to finish %s' % (name, verb), deadline, failure=failure)
        return self.status(server_id)[0]


def is_volume_backed(requests, body):
    """Whether a server boots from a volume, as Nova decides it.

    No image: booted from a volume.  With an image, it still boots from a volume when the image
    maps a volume or snapshot as boot device: the snapshot of a volume-backed server, which Nova
    keeps as the server's image when it launches a new server from it.
    """
    image = body.get('image')
    if not image or not isinstance(image, dict) or not image.get('id'):
        return True
    try:
        mapping = requests.json('image', 'GET', '/images/%s' % image['id']).get('block_device_mapping')
    except ResourceNotFound:
        return False    # image gone: Nova still rebuilds/rescues from its cached copy
    try:
        mapping = json.loads(mapping) if isinstance(mapping, str) else (mapping or [])
    except ValueError:
        mapping = []
    return any(str(item.get('boot_index')) == '0' and item.get('source_type') in ('snapshot', 'volume', 'image')
               and item.get('destination_type', 'volume') == 'volume' for item in mapping)


def _image_properties(image):
    properties = dict(getattr(image, 'properties', None) or {})
    for key in RESCUE_PROPERTIES:       # the SDK maps some properties to attributes
        value = getattr(image, key, None)
        if value:
            properties[key] = value
    return properties


def _layout(stable, properties):
    """The disks as Nova documents them for the rescue guest."""
    if stable:
        return [{'role': 'original', 'target': '(unchanged)', 'original_target': '(unchanged)'},
                {'role': 'rescue', 'target': 'attached last', 'bus': properties.get('hw_rescue_bus'),
                 'device': properties.get('hw_rescue_device')}]
    return [{'role': 'rescue', 'target': 'vda'},
            {'role': 'original', 'target': 'vdb', 'original_target': 'vda'}]
