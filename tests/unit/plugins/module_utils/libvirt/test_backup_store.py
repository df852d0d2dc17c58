# -*- coding: utf-8 -*-
"""The backup store (module_utils/libvirt/backup_store.py) against in-memory hosts with libvirt's storage API:
backups written to and read from another host, the domain's directory removed with its last backup, what
counts as a backup, and the definition a backup keeps (no secrets) and what a relaunch makes of it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import xml.etree.ElementTree as ET

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import backup_store  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import restore as libvirt_restore  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import snapshot as libvirt_snapshot  # noqa: E402

FILE, DIR = libvirt.VIR_STORAGE_VOL_FILE, libvirt.VIR_STORAGE_VOL_DIR


def _error(text):
    error = libvirt.libvirtError(text)
    error.err = (libvirt.VIR_ERR_NO_STORAGE_POOL, 0, text, 0, None, None, None, 0, 0)
    return error


class Host(object):
    """One hypervisor's files: {directory: {name: Vol}}; `pools` are the directories libvirt has a pool for."""

    def __init__(self, name):
        self.name = name
        self.dirs = {'/': {}}
        self.pools = set()
        self.calls = []

    def mkdir(self, path):
        parent, name = os.path.split(path)
        if parent and parent != path and path not in self.dirs:
            self.mkdir(parent)
            self.dirs[parent][name] = Vol(self, os.path.join(parent, name), DIR)
        self.dirs.setdefault(path, {})

    # the connection
    def getHostname(self):
        return self.name

    def getCapabilities(self):
        return '<capabilities><host><uuid>uuid-%s</uuid></host></capabilities>' % self.name

    def storagePoolLookupByTargetPath(self, path):
        if path not in self.pools:
            raise _error('no pool')
        return Pool(self, path)

    def storagePoolCreateXML(self, xml, flags):
        path = ET.fromstring(xml).findtext('target/path')
        if flags & libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD:
            self.mkdir(path)
        elif path not in self.dirs:
            raise _error('cannot open directory %s' % path)
        return Pool(self, path)

    def newStream(self, flags):
        return Stream()


class Pool(object):
    def __init__(self, host, path):
        self.host, self.path = host, path

    def refresh(self, flags):
        pass

    def destroy(self):
        pass

    def listAllVolumes(self, flags):
        return list(self.host.dirs[self.path].values())

    def storageVolLookupByName(self, name):
        if name not in self.host.dirs[self.path]:
            raise _error('no vol')
        return self.host.dirs[self.path][name]

    def createXML(self, xml, flags):
        tree = ET.fromstring(xml)
        vol = Vol(self.host, os.path.join(self.path, tree.findtext('name')), FILE,
                  int(tree.findtext('capacity')), tree.find('target/format').get('type'))
        self.host.dirs[self.path][vol.name()] = vol
        return vol

    def createXMLFrom(self, xml, source, flags):
        assert source.host is self.host, 'a clone needs its source on the same host'
        vol = self.createXML(xml, flags)
        vol.data = source.data if source.fmt == vol.fmt else ('%s->%s:' % (source.fmt, vol.fmt)).encode() + source.data
        self.host.calls.append(('convert', source.path_, vol.path_))
        return vol


class Vol(object):
    def __init__(self, host, path, kind, capacity=0, fmt='raw', data=b''):
        self.host, self.path_, self.kind, self.capacity, self.fmt, self.data = host, path, kind, capacity, fmt, data

    def name(self):
        return os.path.basename(self.path_)

    def path(self):
        return self.path_

    def info(self):
        return [self.kind, self.capacity, len(self.data)]

    def XMLDesc(self, flags):
        return ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='%s'/></target>"
                "</volume>" % (self.name(), self.capacity, self.fmt))

    def delete(self, flags):
        self.host.calls.append(('delete', self.path_))
        if self.kind == DIR:
            assert not self.host.dirs.get(self.path_), 'libvirt deletes only empty directories'
            self.host.dirs.pop(self.path_, None)
        self.host.dirs[os.path.dirname(self.path_)].pop(self.name())

    def download(self, stream, offset, length, flags):
        stream.data, stream.sent = bytearray(self.data), False

    def upload(self, stream, offset, length, flags):
        stream.sink = self


class Stream(object):
    data = sink = None

    def recv(self, nbytes):
        if self.sent:
            return b''
        self.sent = True
        return bytes(self.data)

    def recvFlags(self, nbytes, flags):
        return self.recv(nbytes)

    def send(self, data):
        self.buffer = getattr(self, 'buffer', b'') + data
        return len(data)

    def finish(self):
        if self.sink is not None:
            self.sink.data = getattr(self, 'buffer', b'')

    def abort(self):
        pass


ROOT = '/var/lib/libvirt/images/vmops-backups'
IMAGES = '/var/lib/libvirt/images'


def hosts():
    h1, h2 = Host('h1'), Host('h2')
    for host in (h1, h2):
        host.mkdir(IMAGES)
        host.pools.add(IMAGES)
    return h1, h2


def disk(host, name='g1.qcow2', data=b'disk data', fmt='qcow2'):
    vol = Vol(host, '%s/%s' % (IMAGES, name), FILE, 1024, fmt, data)
    host.dirs[IMAGES][name] = vol
    return vol


def complete(store, domain, backup, disks=('vda.qcow2',)):
    store.write(domain, backup, 'manifest.json', json.dumps({'name': backup, 'complete': True,
                                                             'disks': list(disks)}).encode())


def test_a_disk_goes_to_a_store_on_another_host_and_comes_back_sparse_streamed():
    h1, h2 = hosts()
    store = backup_store.BackupStore(h2, ROOT, 'qemu+tcp://h2/system')
    assert not store.shares_host(h1) and store.shares_host(h2)
    store.put_disk('g1', 'b1', 'vda.qcow2', h1, disk(h1))
    assert h2.dirs[ROOT + '/g1/b1']['vda.qcow2'].data == b'disk data'
    assert h2.dirs[ROOT + '/g1/b1']['vda.qcow2'].fmt == 'qcow2'
    h1.dirs[IMAGES].pop('g1.qcow2')
    store.get_disk(ROOT + '/g1/b1', 'vda.qcow2', h1, Pool(h1, IMAGES), 'g1.qcow2', 'qcow2', 1024)
    assert h1.dirs[IMAGES]['g1.qcow2'].data == b'disk data'       # streamed as it is: same format


def test_a_backup_restored_to_another_format_on_another_host_is_converted_there():
    h1, h2 = hosts()
    store = backup_store.BackupStore(h2, ROOT)
    store.put_disk('g1', 'b1', 'vda.qcow2', h1, disk(h1))
    store.get_disk(ROOT + '/g1/b1', 'vda.qcow2', h1, Pool(h1, IMAGES), 'g1.raw', 'raw', 1024)
    assert h1.dirs[IMAGES]['g1.raw'].data == b'qcow2->raw:disk data'
    assert [name for name in h1.dirs[IMAGES] if name.startswith('.vmops-restore-')] == []    # staging removed


def test_a_store_on_the_domains_host_clones():
    h1, _h2 = hosts()
    store = backup_store.BackupStore(h1, ROOT)
    store.put_disk('g1', 'b1', 'vda.qcow2', h1, disk(h1))
    store.get_disk(ROOT + '/g1/b1', 'vda.qcow2', h1, Pool(h1, IMAGES), 'g1.raw', 'raw', 1024)
    assert ('convert', ROOT + '/g1/b1/vda.qcow2', IMAGES + '/g1.raw') in h1.calls


def test_the_last_backup_of_a_domain_takes_its_directory_along():
    h1, _h2 = hosts()
    store = backup_store.BackupStore(h1, ROOT)
    for backup in ('b1', 'b2'):
        complete(store, 'g1', backup)
    store.remove('g1', 'b1')
    assert store.backups('g1') == ['b2']
    store.remove('g1', 'b2')
    assert store.domains() == [] and ROOT + '/g1' not in h1.dirs and ROOT in h1.dirs


def test_what_counts_as_a_backup():
    h1, _h2 = hosts()
    store = backup_store.BackupStore(h1, ROOT)
    complete(store, 'g1', 'done')
    store.write('g1', 'half', 'manifest.json', json.dumps({'name': 'half', 'complete': False}).encode())
    store.open_backup('g1', 'empty')
    store.open_backup('.staging', 'g1-x')
    assert store.domains() == ['g1'] and store.backups('g1') == ['done', 'empty', 'half']
    assert store.manifest('g1', 'done')[1] == backup_store.COMPLETE
    assert store.manifest('g1', 'half')[1] == backup_store.INCOMPLETE
    assert store.manifest('g1', 'empty') == (None, backup_store.INCOMPLETE)
    assert store.manifest('g1', 'gone') == (None, backup_store.MISSING)


def test_a_backup_pool_is_its_directory():
    class PoolConn(Host):
        def storagePoolLookupByName(self, name):
            if name != 'backups':
                raise _error('Storage pool not found')
            pool = Pool(self, '/srv/backups')
            pool.isActive = lambda: 1
            pool.XMLDesc = lambda flags: "<pool type='dir'><target><path>/srv/backups</path></target></pool>"
            return pool
    host = PoolConn('h2')
    host.label = 'h2'
    assert backup_store.pool_directory(host, 'backups') == '/srv/backups'
    with pytest.raises(InvalidRequest) as info:
        backup_store.pool_directory(host, 'nope')
    assert 'no such storage pool on h2' in info.value.msg


SECURE = """<domain type='qemu'><name>g1</name><devices>
  <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0' passwd='s3cret'/>
  <graphics type='spice' autoport='yes'/>
</devices></domain>"""


class SecretDomain(object):
    def XMLDesc(self, flags):
        secure = SECURE
        return secure if flags & libvirt.VIR_DOMAIN_XML_SECURE else secure.replace(" passwd='s3cret'", '')


def test_a_backup_keeps_the_definition_without_its_secrets_and_says_so():
    definition, removed = libvirt_snapshot._definition_without_secrets(SecretDomain())
    assert 's3cret' not in definition and removed == ['graphics vnc passwd']


def test_a_domain_defined_again_from_such_a_backup_gets_a_console_password_nobody_knows():
    definition, removed = libvirt_snapshot._definition_without_secrets(SecretDomain())
    tree = ET.fromstring(definition)
    assert libvirt_restore._lock_consoles(tree, removed) == ['vnc']
    vnc, spice = tree.findall('./devices/graphics')
    assert vnc.get('passwd') and vnc.get('passwd') != 's3cret' and spice.get('passwd') is None
