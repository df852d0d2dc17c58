# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: compute_hosts
short_description: Compute hosts of an OpenStack cloud and of libvirt hosts, with their state and room
version_added: 0.1.0
description:
  - One inventory host per OpenStack compute service (C(nova-compute)), with its service state, its
    availability zone, aggregates and hypervisor type, its instances counted by state, the server groups
    with members on it, and its vCPU, RAM and disk used and capacity from Placement (allocation ratios
    and reservations counted).
  - One inventory host per libvirt URI listed in O(libvirt_uris), with its domains counted by state and
    its capacity.
  - Groups, all prefixed with O(group_prefix) (V(vmops_) by default), C(openstack) and C(libvirt) aside;
    V(az_<zone>), V(aggregate_<name>), V(service_<enabled|disabled|down|forced_down>),
    V(hypervisor_<type>); plus what O(keyed_groups), O(groups) and O(compose) build.
  - Reads only. The inventory source file name must end in C(compute_hosts.yml) or C(compute_hosts.yaml).
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin, so that Ansible picks it for the source file.
    type: str
    required: true
    choices: [vmops.lifecycle.compute_hosts]
  openstack:
    description:
      - Whether to read the compute hosts of the OpenStack cloud named by O(cloud) (or the environment).
    type: bool
    default: true
  cloud:
    description:
      - Name of a cloud in C(clouds.yaml), or a dict holding a whole cloud configuration, as for the
        collection's modules.
      - When neither O(cloud) nor O(auth) is given, openstacksdk reads the environment (E(OS_CLOUD),
        E(OS_CLIENT_CONFIG_FILE), E(OS_AUTH_URL) ...).
      - The credentials need the admin role.
    type: raw
  auth:
    description:
      - Authentication data for the cloud's auth plugin; for the default password plugin
        C(auth_url), C(username), C(password), C(project_name) and the domain names.
    type: dict
  auth_type:
    description: Name of the keystoneauth plugin, when not password.
    type: str
  region_name:
    description: Name of the region.
    type: str
  validate_certs:
    description: Whether to verify TLS certificates of the API endpoints.
    type: bool
  ca_cert:
    description: Path to a CA bundle for verifying the endpoints.
    type: str
  client_cert:
    description: Path to a client certificate, for clouds that require one.
    type: str
  client_key:
    description: Path to the key of O(client_cert).
    type: str
  api_timeout:
    description: Seconds an individual API request may take.
    type: int
  interface:
    description: Which endpoints of the service catalog to use.
    type: str
    choices: [admin, internal, public]
    default: public
  sdk_log_path:
    description:
      - Path of a file that openstacksdk logs to (secrets appear in it at V(DEBUG); keep it private).
    type: str
  sdk_log_level:
    description: Level of openstacksdk's log in O(sdk_log_path).
    type: str
    choices: [INFO, DEBUG]
    default: INFO
  placement:
    description:
      - Whether to read each host's capacity from Placement (two requests per compute node).
    type: bool
    default: true
  retry_budget:
    description:
      - Seconds a failing read (HTTP 5xx, connection reset) is retried before the inventory fails.
    type: int
    default: 60
  libvirt_uris:
    description:
      - libvirt connection URIs of hosts to list (read-only connections).
    type: list
    elements: str
    default: []
  group_prefix:
    description: Prefix of the groups this plugin makes (except C(openstack) and C(libvirt)).
    type: str
    default: vmops_
requirements:
  - openstacksdk >= 1.0, for OpenStack
  - libvirt-python, for O(libvirt_uris)
'''

EXAMPLES = r'''
# compute_hosts.yml: every compute host of the cloud, grouped for a rolling job template
plugin: vmops.lifecycle.compute_hosts
cloud: vmops-admin
keyed_groups:
  - key: vmops_zone
    prefix: zone
compose:
  vmops_free_vcpus: vmops_capacity.vcpus.free | default(0)
groups:
  empty_hosts: vmops_instances.total == 0
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /tmp/vmops_inventory_cache

# libvirt only
# plugin: vmops.lifecycle.compute_hosts
# openstack: false
# libvirt_uris:
#   - qemu+ssh://root@kvm1.example.org/system
#   - qemu+ssh://root@kvm2.example.org/system
'''

import re

from ansible.errors import AnsibleError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.inventory import read_libvirt_host
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import request
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.inventory import read_compute_hosts

OPENSTACK_KEYS = ('cloud', 'auth', 'auth_type', 'region_name', 'validate_certs', 'ca_cert', 'client_cert',
                  'client_key', 'api_timeout', 'interface', 'sdk_log_path', 'sdk_log_level', 'retry_budget')


def group_safe(text):
    """Group names Ansible accepts without a warning: lower case, letters, digits and underscores."""
    return re.sub(r'[^a-z0-9_]', '_', str(text).lower())


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Compute hosts of OpenStack and libvirt as an inventory (see DOCUMENTATION)."""

    NAME = 'vmops.lifecycle.compute_hosts'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and \
            path.endswith(('compute_hosts.yml', 'compute_hosts.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        facts = None
        if use_cache:
            try:
                facts = self._cache[cache_key]
            except KeyError:
                facts = None
        if facts is None:
            facts = self.read()
            if self.get_option('cache'):
                self._cache[cache_key] = facts
        self.populate(facts)

    def read(self):
        """{'openstack': {host: facts}, 'libvirt': {name: facts}}, from the backends (no cache)."""
        facts = {'openstack': {}, 'libvirt': {}}
        try:
            if self.get_option('openstack'):
                facts['openstack'] = self._read_openstack()
            for uri in self.get_option('libvirt_uris') or []:
                host = read_libvirt_host(uri)
                facts['libvirt'][host['hostname']] = host
        except VmopsError as error:
            raise AnsibleError('vmops.lifecycle.compute_hosts: %s' % error.msg)
        return facts

    def _read_openstack(self):
        if not request.HAS_LIBRARY:
            raise AnsibleError('vmops.lifecycle.compute_hosts needs openstacksdk for OpenStack: %s'
                               % request.LIBRARY_IMPORT_ERROR)
        params = dict((key, self.get_option(key)) for key in OPENSTACK_KEYS)
        requests = request.RequestLayer.open(params)
        try:
            return read_compute_hosts(requests, placement=self.get_option('placement'))
        finally:
            requests.close()

    def populate(self, facts):
        prefix = self.get_option('group_prefix')
        strict = self.get_option('strict')
        for name, host in sorted(facts.get('openstack', {}).items()):
            groups = ['openstack', '%saz_%s' % (prefix, group_safe(host['zone'] or 'none')),
                      '%sservice_%s' % (prefix, host['status'])]
            groups += ['%saggregate_%s' % (prefix, group_safe(a)) for a in host['aggregates']]
            if host['hypervisor_type']:
                groups.append('%shypervisor_%s' % (prefix, group_safe(host['hypervisor_type'])))
            hostvars = {
                'vmops_backend': 'openstack', 'vmops_zone': host['zone'], 'vmops_status': host['status'],
                'vmops_service': host['service'], 'vmops_disabled_reason': host['service'].get('disabled_reason'),
                'vmops_aggregates': host['aggregates'], 'vmops_hypervisor_type': host['hypervisor_type'],
                'vmops_hypervisors': host['hypervisors'], 'vmops_instances': host['instances'],
                'vmops_server_groups': host['server_groups'], 'vmops_capacity': host['capacity']}
            self._add(name, groups, hostvars, strict)
        for name, host in sorted(facts.get('libvirt', {}).items()):
            hostvars = {'vmops_backend': 'libvirt', 'vmops_libvirt_uri': host['uri'],
                        'vmops_instances': host['domains'], 'vmops_capacity': host['capacity'],
                        'vmops_cpu_model': host['cpu_model']}
            self._add(name, ['libvirt'], hostvars, strict)

    def _add(self, name, groups, hostvars, strict):
        self.inventory.add_host(name)
        for group in groups:
            self.inventory.add_group(group)
            self.inventory.add_child(group, name)
        for key, value in hostvars.items():
            self.inventory.set_variable(name, key, value)
        self._set_composite_vars(self.get_option('compose'), hostvars, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option('groups'), hostvars, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, name, strict=strict)
