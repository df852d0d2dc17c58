# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compute_hosts inventory: the OpenStack and libvirt reads on fakes, and the groups and host
variables the plugin builds from them (with keyed_groups, groups, compose and the cache)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
import yaml

from ansible import constants as C
from ansible.inventory.data import InventoryData
from ansible.plugins.doc_fragments import constructed, inventory_cache
from ansible.parsing.dataloader import DataLoader

from ansible_collections.vmops.lifecycle.plugins.inventory import compute_hosts
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import ConnectionFailed, ServiceUnavailable
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import inventory as libvirt_inventory
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import inventory as openstack_inventory


def _service(host, status='enabled', state='up', forced_down=False, reason=None, zone='nova'):
    return {'id': 'svc-' + host, 'host': host, 'binary': 'nova-compute', 'status': status, 'state': state,
            'forced_down': forced_down, 'disabled_reason': reason, 'zone': zone}


def _server(sid, host, status='ACTIVE'):
    return {'id': sid, 'name': 'vm-' + sid, 'status': status, 'OS-EXT-SRV-ATTR:host': host,
            'OS-EXT-STS:vm_state': status.lower()}


class FakeRequests(object):
    """Answers the reads of openstack/inventory.py from canned bodies and records what was asked."""

    def __init__(self, servers, placement_fails=False, page=None):
        self.asked = []
        self.servers = servers
        self.placement_fails = placement_fails
        self.page = page
        self.bodies = {
            '/os-services': {'services': [
                _service('c1'), _service('c2', status='disabled', reason='firmware'),
                _service('c3', state='down'), _service('c4', state='down', forced_down=True, zone='edge')]},
            '/os-hypervisors/detail': {'hypervisors': [
                {'id': 'rp-%s' % n, 'hypervisor_hostname': n + '.example', 'state': 'up',
                 'hypervisor_type': 'QEMU', 'service': {'host': n}} for n in ('c1', 'c2', 'c3', 'c4')]},
            '/os-aggregates': {'aggregates': [{'name': 'gpu', 'hosts': ['c1', 'c2']},
                                              {'name': 'Fast Disks', 'hosts': ['c1', 'gone']}]},
            '/os-server-groups': {'server_groups': [
                {'id': 'g1', 'name': 'web', 'policy': 'anti-affinity', 'members': ['s1', 's3']},
                {'id': 'g2', 'name': 'db', 'policies': ['affinity'], 'members': ['s2', 's4']}]},
        }

    def json(self, service, method, path, params=None, microversion=None, **kwargs):
        self.asked.append((service, method, path, microversion, params))
        if service == 'placement':
            if self.placement_fails:
                raise ServiceUnavailable('Placement GET %s failed (HTTP 503)' % path)
            if path.endswith('/inventories'):
                return {'inventories': {
                    'VCPU': {'total': 8, 'reserved': 0, 'allocation_ratio': 4.0},
                    'MEMORY_MB': {'total': 16384, 'reserved': 512, 'allocation_ratio': 1.5},
                    'DISK_GB': {'total': 100, 'reserved': 0, 'allocation_ratio': 1.0}}}
            return {'usages': {'VCPU': 3, 'MEMORY_MB': 3072, 'DISK_GB': 30}}
        if path == '/servers/detail':
            servers = self.servers
            if self.page:
                start = 0
                if params.get('marker'):
                    start = [s['id'] for s in servers].index(params['marker']) + 1
                servers = servers[start:start + self.page]
            return {'servers': servers}
        return self.bodies[path]


SERVERS = [_server('s1', 'c1'), _server('s2', 'c1', 'SHUTOFF'), _server('s3', 'c2', 'PAUSED'),
           _server('s4', 'c1', 'ERROR'), _server('s5', None, 'SHELVED_OFFLOADED')]


def test_openstack_read_names_status_groups_counts_and_capacity():
    requests = FakeRequests(SERVERS)
    hosts = openstack_inventory.read_compute_hosts(requests)
    assert sorted(hosts) == ['c1', 'c2', 'c3', 'c4']
    assert [hosts[n]['status'] for n in ('c1', 'c2', 'c3', 'c4')] == ['enabled', 'disabled', 'down', 'forced_down']
    assert hosts['c2']['service']['disabled_reason'] == 'firmware'
    assert hosts['c1']['aggregates'] == ['Fast Disks', 'gpu']
    assert hosts['c1']['instances'] == {'total': 3, 'by_state': {'error': 1, 'running': 1, 'stopped': 1}}
    assert hosts['c3']['instances'] == {'total': 0, 'by_state': {}}
    groups = dict((g['name'], g) for g in hosts['c1']['server_groups'])
    assert groups['db']['policy'] == 'affinity' and groups['db']['members_here'] == 2
    assert groups['web']['members_here'] == 1
    assert hosts['c1']['hypervisor_type'] == 'QEMU'
    vcpus, ram = hosts['c1']['capacity']['vcpus'], hosts['c1']['capacity']['ram_mb']
    assert (vcpus['capacity'], vcpus['used'], vcpus['free'], vcpus['allocation_ratio']) == (32, 3, 29, 4.0)
    assert ram['capacity'] == int((16384 - 512) * 1.5) and ram['reserved'] == 512
    # Placement read as the rest of the collection reads it.
    assert ('placement', 'GET', '/resource_providers/rp-c1/usages', '1.29', None) in requests.asked
    assert all(asked[0] != 'compute' or asked[1] == 'GET' for asked in requests.asked)


def test_openstack_read_pages_through_servers():
    servers = [_server('s%03d' % n, 'c1') for n in range(7)]
    requests = FakeRequests(servers, page=3)
    original = openstack_inventory.SERVERS_PAGE
    openstack_inventory.SERVERS_PAGE = 3
    try:
        hosts = openstack_inventory.read_compute_hosts(requests, placement=False)
    finally:
        openstack_inventory.SERVERS_PAGE = original
    assert hosts['c1']['instances']['total'] == 7
    assert len([a for a in requests.asked if a[2] == '/servers/detail']) == 3
    assert hosts['c1']['capacity'] is None
    assert not [a for a in requests.asked if a[0] == 'placement']


def test_openstack_read_says_when_placement_cannot_be_read():
    hosts = openstack_inventory.read_compute_hosts(FakeRequests(SERVERS, placement_fails=True))
    assert 'Placement could not be read' in hosts['c1']['capacity']['error']


class FakeDomain(object):
    def __init__(self, state, max_kib, vcpus, saved=False):
        self._info = [state, max_kib, max_kib, vcpus, 0]
        self.saved = saved

    def info(self):
        return self._info

    def hasManagedSaveImage(self, flags):
        return 1 if self.saved else 0


class FakeLibvirtConnection(object):
    closed = False

    def __init__(self, domains):
        self.domains = domains

    def getHostname(self):
        return 'kvm-a'

    def getInfo(self):
        return ['x86_64', 32000, 16, 2400, 1, 1, 8, 2]

    def getFreeMemory(self):
        return 20000 * 1024 * 1024

    def listAllDomains(self, flags):
        return self.domains

    def close(self):
        self.closed = True


libvirt = pytest.importorskip('libvirt')


def test_libvirt_read_counts_domains_and_capacity():
    conn = FakeLibvirtConnection([
        FakeDomain(libvirt.VIR_DOMAIN_RUNNING, 2097152, 2), FakeDomain(libvirt.VIR_DOMAIN_PAUSED, 1048576, 1),
        FakeDomain(libvirt.VIR_DOMAIN_SHUTOFF, 1048576, 1), FakeDomain(libvirt.VIR_DOMAIN_SHUTOFF, 524288, 1, saved=True)])
    host = libvirt_inventory.read_libvirt_host('qemu+ssh://root:secret@kvm-a/system', opener=lambda uri: conn)
    assert conn.closed
    assert host['hostname'] == 'kvm-a'
    assert 'secret' not in host['uri']
    assert host['domains'] == {'total': 4, 'by_state': {'paused': 1, 'running': 1, 'stopped': 1, 'suspended': 1}}
    assert host['capacity']['vcpus'] == {'total': 16, 'used': 3, 'defined': 5}
    assert host['capacity']['ram_mb'] == {'total': 32000, 'free': 20000, 'used': 3072, 'defined': 4608}


def test_libvirt_read_failure_names_the_host_without_secrets():
    def refuse(uri):
        raise RuntimeError('connection refused')
    with pytest.raises(ConnectionFailed) as error:
        libvirt_inventory.read_libvirt_host('qemu+ssh://root:secret@kvm-a/system', opener=refuse)
    assert 'kvm-a' in error.value.msg and 'secret' not in error.value.msg


# The plugin --------------------------------------------------------------------------------------

def _facts():
    hosts = openstack_inventory.read_compute_hosts(FakeRequests(SERVERS))
    libvirt_host = {'hostname': 'kvm-a', 'uri': 'qemu:///system', 'cpu_model': 'x86_64',
                    'domains': {'total': 1, 'by_state': {'running': 1}},
                    'capacity': {'vcpus': {'total': 4, 'used': 1, 'defined': 1}}}
    return {'openstack': hosts, 'libvirt': {'kvm-a': libvirt_host}}


def _register_options():
    """What ansible-core's plugin loader does for a collection plugin, without the collection loader:
    the plugin's options (its own and its fragments') made known to the configuration."""
    options = {}
    for text in (constructed.ModuleDocFragment.DOCUMENTATION, inventory_cache.ModuleDocFragment.DOCUMENTATION,
                 compute_hosts.DOCUMENTATION):
        options.update(yaml.safe_load(text)['options'])
    C.config.initialize_plugin_configuration_definitions('inventory', compute_hosts.InventoryModule.NAME, options)


def _parse(tmp_path, monkeypatch, extra='', facts=None, cache_dir=None):
    source = tmp_path / 'cloud.compute_hosts.yml'
    text = 'plugin: vmops.lifecycle.compute_hosts\ncloud: nowhere\n' + extra
    if cache_dir:
        text += 'cache: true\ncache_plugin: jsonfile\ncache_connection: %s\n' % cache_dir
    source.write_text(text)
    _register_options()
    plugin = compute_hosts.InventoryModule()
    plugin._load_name = compute_hosts.InventoryModule.NAME
    reads = []

    def read():
        reads.append(1)
        return facts if facts is not None else _facts()
    monkeypatch.setattr(plugin, 'read', read)
    inventory = InventoryData()
    assert plugin.verify_file(str(source))
    plugin.parse(inventory, DataLoader(), str(source), cache=True)
    if cache_dir:
        plugin.update_cache_if_changed()         # the inventory manager does this after each source
    return inventory, reads


def _members(inventory, group):
    return sorted(h.name for h in inventory.groups[group].get_hosts())


def test_plugin_groups_and_host_variables(tmp_path, monkeypatch):
    inventory, _reads = _parse(tmp_path, monkeypatch, extra=(
        'keyed_groups:\n  - key: vmops_zone\n    prefix: zone\n'
        'groups:\n  empty: vmops_instances.total == 0\n'
        'compose:\n  free_vcpus: vmops_capacity.vcpus.free\n'))
    assert _members(inventory, 'vmops_service_enabled') == ['c1']
    assert _members(inventory, 'vmops_service_disabled') == ['c2']
    assert _members(inventory, 'vmops_service_down') == ['c3']
    assert _members(inventory, 'vmops_service_forced_down') == ['c4']
    assert _members(inventory, 'vmops_az_edge') == ['c4']
    assert _members(inventory, 'vmops_aggregate_fast_disks') == ['c1']
    assert _members(inventory, 'vmops_aggregate_gpu') == ['c1', 'c2']
    assert _members(inventory, 'vmops_hypervisor_qemu') == ['c1', 'c2', 'c3', 'c4']
    assert _members(inventory, 'openstack') == ['c1', 'c2', 'c3', 'c4']
    assert _members(inventory, 'libvirt') == ['kvm-a']
    assert _members(inventory, 'zone_nova') == ['c1', 'c2', 'c3']
    assert _members(inventory, 'empty') == ['c3', 'c4']
    c2 = inventory.get_host('c2').vars
    assert c2['vmops_disabled_reason'] == 'firmware' and c2['vmops_status'] == 'disabled'
    assert inventory.get_host('c1').vars['free_vcpus'] == 29
    assert inventory.get_host('kvm-a').vars['vmops_instances']['total'] == 1


def test_plugin_cache_answers_the_second_parse(tmp_path, monkeypatch):
    cache_dir = tmp_path / 'cache'
    _inventory, reads = _parse(tmp_path, monkeypatch, cache_dir=cache_dir)
    assert reads == [1]
    inventory, reads = _parse(tmp_path, monkeypatch, cache_dir=cache_dir, facts={'openstack': {}, 'libvirt': {}})
    assert reads == []                     # from the cache, not from the cloud
    assert 'c1' in [h.name for h in inventory.groups['openstack'].get_hosts()]


def test_plugin_ignores_other_files(tmp_path):
    other = tmp_path / 'hosts.yml'
    other.write_text('plugin: vmops.lifecycle.compute_hosts\n')
    assert not compute_hosts.InventoryModule().verify_file(str(other))


def test_group_names_are_safe():
    assert compute_hosts.group_safe('Fast Disks-1') == 'fast_disks_1'


def test_rolling_inputs_feed_the_planner():
    servers = [dict(s, flavor={'vcpus': 2, 'ram': 2048, 'disk': 20, 'ephemeral': 0, 'swap': 512},
                    **{'OS-EXT-AZ:availability_zone': 'nova'}) for s in SERVERS]
    hosts, instances, excluded = openstack_inventory.rolling_inputs(FakeRequests(servers))
    assert excluded == ['c2', 'c3', 'c4']
    c1 = [h for h in hosts if h.name == 'c1'][0]
    assert (c1.total, c1.reserved, c1.ratio, c1.used) == ((8, 16384, 100), (0, 512, 0), (4.0, 1.5, 1.0),
                                                          (3, 3072, 30))
    s2 = [i for i in instances if i.id == 's2'][0]
    assert (s2.host, s2.state, s2.size, s2.group, s2.policy, s2.az) == \
        ('c1', 'stopped', (2, 2048, 21), 'g2', 'affinity', 'nova')
    offloaded = [i for i in instances if i.id == 's5'][0]
    assert offloaded.host is None and offloaded.state == 'shelved_offloaded'
