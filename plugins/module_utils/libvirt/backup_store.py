# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the backups of libvirt domains live, and how they are listed, read and written: BackupStore.

A store is one directory on one libvirt host, reached only through that host's storage API (so a
remote URI works like a local one, and no file access on any hypervisor is needed):

  <root>/<domain name>/<backup name>/   the disk copies, domain.xml, manifest.json (written last)

The store's host is the domain's own by default (root /var/lib/libvirt/images/vmops-backups), or any
other libvirt host (instance_snapshot's `backup_uri`), its directory given as a path (`backup_dir`) or
as a storage pool of that host (`backup_pool`: the pool's target directory).  A directory that every
hypervisor mounts (NFS ...) is a store too: each host then reaches the same files under the same path.

The interface, for instance_snapshot and instance_restore and for what builds on them (incremental
chains, bringing a dead host's domains up elsewhere from their newest verified backup).  A backup is
named by its directory: path(domain, backup), or any directory of the store's host (`path` below):

  location()                          {uri, host, root}: where the store is (the URI without password)
  shares_host(conn)                   whether `conn` reaches the store's own host (a backup job then
                                      writes straight into it)
  domains()                           names of the domains that have a directory in the store
  backups(domain)                     names of a domain's backup directories
  manifest(domain, backup), manifest_at(path)
                                      (manifest dict or None, COMPLETE | INCOMPLETE | MISSING)
  files_of(domain, backup), files_at(path)
                                      {file: (type, capacity, allocation, path)}
  read(domain, backup, file), read_at(path, file)
                                      bytes or None (small files: the manifest, domain.xml)
  open_backup(domain, backup)         the directory of a new backup (made), its path
  write(domain, backup, file, data)   small files; the manifest last
  put_disk(domain, backup, file, from_conn, from_volume)
                                      a disk file streamed in from any host (sparse: holes stay holes)
  volume(path, file)                  a disk file as a volume of the store's host
  get_disk(path, file, to_conn, to_pool, name, fmt, capacity)
                                      a disk file written out as volume `name` of a pool on any host, in
                                      format `fmt` (a clone on the store's host; else streamed, and
                                      converted on that host when the formats differ)
  remove(domain, backup), remove_at(parent, backup)
                                      a backup directory, then the domain's directory once it is empty
  close()

A backup counts only once its manifest says `complete: true`; names starting with a dot (the staging
area of backups on their way to another host) are never domains or backups.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, ConnectionFailed, InvalidRequest)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import DEFAULT_BACKUP_DIR
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import host_uuid
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import (
    LibvirtConnection, libvirt, redact_uri)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.host_files import MANIFEST, HostFiles
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.storage import pipe_volume, volume_shape

DOMAIN_XML = 'domain.xml'
COMPLETE, INCOMPLETE, MISSING = 'complete', 'incomplete', 'missing'
# Where a backup for a store on another host is written first, on the domain's own host (then removed).
STAGING_DIR = DEFAULT_BACKUP_DIR + '/.staging'


def chain_point(manifest):
    """Whether a manifest is a point of an instance_backup chain: its disk files may hold only what changed
    since its parent (a qcow2 backed by the parent's), so instance_snapshot, instance_restore and the
    evacuation never take it for a standalone backup."""
    return bool(manifest) and manifest.get('chain_format') is not None


def open_store(backend, backup_uri=None, backup_pool=None, backup_dir=None):
    """The BackupStore the options name: on the host of `backup_uri` (default: the backend's own), in
    `backup_pool`'s directory or in `backup_dir` (default DEFAULT_BACKUP_DIR)."""
    conn, owned = backend.conn, None
    if backup_uri and backup_uri != backend.uri:
        try:
            conn = owned = LibvirtConnection(backup_uri, backend.conn.retry_budget, role='backup store',
                                             deadline=backend.conn.deadline)
        except ConnectionFailed as error:
            raise ConnectionFailed('Cannot reach the backup store: %s' % error.msg, **error.details)
    try:
        root = backup_dir or DEFAULT_BACKUP_DIR
        if backup_pool:
            root = pool_directory(conn, backup_pool)
        store = BackupStore(conn, root, backup_uri or backend.uri)
    except Exception:
        if owned is not None:
            owned.close()
        raise
    store.owned = owned
    return store


def pool_directory(conn, name):
    """The target directory of storage pool `name` on the host of `conn` (it must be active)."""
    try:
        pool = conn.storagePoolLookupByName(name)
        active = pool.isActive()
        path = ET.fromstring(pool.XMLDesc(0)).findtext('target/path')
    except libvirt.libvirtError as error:
        raise InvalidRequest('backup_pool %s: no such storage pool on %s (%s); nothing was changed.'
                             % (name, conn.label, error.get_error_message()))
    if not active or not path:
        raise InvalidRequest('backup_pool %s on %s is %s; nothing was changed.'
                             % (name, conn.label, 'not active' if not active else 'not a directory pool'))
    return path


class BackupStore(object):
    """The backups of domains under `root` on the host of `conn` (a kept connection); see the module
    docstring.  `conn` is the store's own connection: close() releases the transient pools only."""

    owned = None        # a connection of its own (a store on another host), closed with the store

    def __init__(self, conn, root, uri=None):
        self.conn = conn
        self.root = root.rstrip('/') or '/'
        self.uri = uri
        self.files = HostFiles(conn)
        self._host = None

    def close(self):
        self.files.close()
        if self.owned is not None:
            self.owned.close()
            self.owned = None

    # --- where

    def location(self):
        if self._host is None:
            try:
                self._host = self.conn.getHostname()
            except (libvirt.libvirtError, BackendError):
                self._host = None
        return {'uri': redact_uri(self.uri) if self.uri else None, 'host': self._host, 'root': self.root}

    def shares_host(self, conn):
        return conn is self.conn or host_uuid(conn) == host_uuid(self.conn)

    def path(self, domain, backup=None):
        return '%s/%s' % (self.root, domain) if backup is None else '%s/%s/%s' % (self.root, domain, backup)

    # --- listing and reading

    def _names(self, path, kind):
        pool = self.files.pool(path)
        if pool is None:
            return []
        return sorted(name for name, info in self.files.listing(pool).items()
                      if info[0] == kind and not name.startswith('.'))

    def domains(self):
        return self._names(self.root, libvirt.VIR_STORAGE_VOL_DIR)

    def backups(self, domain):
        return self._names(self.path(domain), libvirt.VIR_STORAGE_VOL_DIR)

    def manifest(self, domain, backup):
        """(manifest, COMPLETE) for a finished backup, (None or the unfinished manifest, INCOMPLETE) for a
        directory without a manifest saying complete, (None, MISSING) when there is no such directory."""
        return self.manifest_at(self.path(domain, backup))

    def manifest_at(self, path):
        pool = self.files.pool(path)
        if pool is None:
            return None, MISSING
        raw = self.files.read(pool, MANIFEST)
        try:
            manifest = json.loads(raw.decode('utf-8')) if raw else None
        except ValueError:
            manifest = None
        if not manifest or manifest.get('complete') is not True:
            return manifest, INCOMPLETE
        return manifest, COMPLETE

    def files_at(self, path):
        pool = self.files.pool(path)
        return self.files.listing(pool) if pool is not None else {}

    def files_of(self, domain, backup):
        return self.files_at(self.path(domain, backup))

    def read(self, domain, backup, name):
        return self.read_at(self.path(domain, backup), name)

    def read_at(self, path, name):
        pool = self.files.pool(path)
        return self.files.read(pool, name) if pool is not None else None

    def volume(self, path, name):
        """A file of backup directory `path` as a volume of the store's host."""
        return self.files.pool(path).storageVolLookupByName(name)

    # --- writing

    def open_backup(self, domain, backup):
        """The directory of a new backup (made with its parents); returns its path."""
        self.files.pool(self.path(domain, backup), create=True)
        return self.path(domain, backup)

    def write(self, domain, backup, name, data):
        self.files.write(self.files.pool(self.path(domain, backup), create=True), name, data)

    def put_disk(self, domain, backup, name, from_conn, from_volume):
        """Stream a disk file of another host (or of this one) into the backup: a volume shaped like it
        (capacity, format), filled with sparse streams.  Returns the data bytes sent."""
        pool = self.files.pool(self.path(domain, backup), create=True)
        self.files.remove(pool, name)
        volume = pool.createXML(volume_shape(from_volume.XMLDesc(0), name), 0)
        return pipe_volume(from_conn, self.conn, from_volume, volume)

    def get_disk(self, path, name, to_conn, target_pool, target_name, fmt, capacity):
        """Write backup file `name` of backup directory `path` out as volume `target_name` of `target_pool` on
        the host of `to_conn`, in format `fmt`.  The caller removed any volume of that name."""
        source = self.volume(path, name)
        xml = _volume_xml(target_name, capacity, fmt)
        if to_conn is self.conn:
            return target_pool.createXMLFrom(xml, source, 0)      # qemu-img convert on the store's host
        source_format = ET.fromstring(source.XMLDesc(0)).find('target/format')
        source_format = source_format.get('type') if source_format is not None else 'raw'
        if source_format == fmt:
            volume = target_pool.createXML(xml, 0)
            pipe_volume(self.conn, to_conn, source, volume)
            return volume
        # Another format on another host: stream it next to the target, convert there, drop the copy.
        staged_name = '.vmops-restore-%s-%s' % (uuid.uuid4().hex[:8], name)
        staged = target_pool.createXML(volume_shape(source.XMLDesc(0), staged_name), 0)
        try:
            pipe_volume(self.conn, to_conn, source, staged)
            return target_pool.createXMLFrom(xml, staged, 0)
        finally:
            try:
                staged.delete(0)
            except libvirt.libvirtError:
                pass

    def remove(self, domain, backup):
        """Delete a backup directory, then the domain's directory if that was its last backup."""
        self.remove_at(self.path(domain), backup)

    def remove_at(self, parent, backup):
        self.files.remove_dir(parent, backup)
        if parent.rstrip('/') != self.root and os.path.dirname(parent.rstrip('/')) == self.root:
            self.files.remove_if_empty(self.root, os.path.basename(parent.rstrip('/')))


def _volume_xml(name, capacity, fmt):
    volume = ET.Element('volume')
    ET.SubElement(volume, 'name').text = name
    ET.SubElement(volume, 'capacity', unit='bytes').text = str(capacity)
    ET.SubElement(volume, 'allocation', unit='bytes').text = '0'
    target = ET.SubElement(volume, 'target')
    ET.SubElement(target, 'format', type=fmt)
    return ET.tostring(volume, encoding='unicode')
