# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files and directories on a hypervisor host, through libvirt's storage API only (HostFiles).

A directory is opened as a `dir` storage pool: the pool libvirt already has for it, refreshed, or a
transient one made for the run (destroyed by close(); the files stay).  Small files are written and
read with volume upload and download, so a remote URI works like a local one and nothing needs file
access on the host.  The backup store (backup_store.py) keeps its backups with it; rescue checks with
it that the files a rescue guest boots from are there (stat()).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import uuid

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

MANIFEST = 'manifest.json'     # removed first when a backup directory is deleted: it is never half there


def _escape(text):
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace("'", '&apos;')


class HostFiles(object):
    """Files and directories on one hypervisor host, through libvirt's storage API.

    A directory is opened as a transient `dir` storage pool (an existing pool on that path is
    reused); the pools this object created are destroyed by close(), which leaves the files.
    """

    def __init__(self, conn):
        self.conn = conn
        self._created = []

    def close(self):
        while self._created:
            pool = self._created.pop()
            try:
                pool.destroy()
            except libvirt.libvirtError:
                pass

    def pool(self, path, create=False):
        """The pool of directory `path` (made, with its parents, when `create`), or None if missing."""
        try:
            pool = self.conn.storagePoolLookupByTargetPath(path)
            pool.refresh(0)
            return pool
        except libvirt.libvirtError:
            pass
        xml = ("<pool type='dir'><name>vmops-files-%s</name><target><path>%s</path>"
               "<permissions><mode>0755</mode></permissions></target></pool>" % (uuid.uuid4().hex[:12], _escape(path)))
        flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if create else 0
        try:
            pool = self.conn.storagePoolCreateXML(xml, flags)
        except libvirt.libvirtError as error:
            if not create:
                return None     # no such directory
            raise BackendError('Cannot create directory %s on the host: %s' % (path, error.get_error_message()))
        self._created.append(pool)
        return pool

    def release(self, pool):
        """Destroy a transient pool this object made (the files stay)."""
        if pool in self._created:
            self._created.remove(pool)
            try:
                pool.destroy()
            except libvirt.libvirtError:
                pass

    def listing(self, pool):
        """{name: (type, capacity, allocation, path)} of the files and directories in a pool."""
        entries = {}
        for volume in pool.listAllVolumes(0):
            kind, capacity, allocation = volume.info()
            entries[volume.name()] = (kind, capacity, allocation, volume.path())
        return entries

    def read(self, pool, name):
        try:
            volume = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None
        stream = self.conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        chunks = []
        while True:
            chunk = stream.recv(262144)
            if not chunk or not isinstance(chunk, bytes):
                break
            chunks.append(chunk)
        stream.finish()
        return b''.join(chunks)

    def write(self, pool, name, data):
        self.remove(pool, name)
        xml = ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity>"
               "<target><format type='raw'/><permissions><mode>0600</mode></permissions></target></volume>"
               % (_escape(name), len(data)))
        volume = pool.createXML(xml, 0)
        stream = self.conn.newStream(0)
        volume.upload(stream, 0, len(data), 0)
        offset = 0
        while offset < len(data):
            sent = stream.send(data[offset:offset + 262144])
            offset += sent
        stream.finish()

    def stat(self, path):
        """(volume type, capacity in bytes) of the file or directory at `path` on the host, or None when its
        directory does not hold it (or cannot be opened by libvirt)."""
        directory, name = os.path.split(path.rstrip('/'))
        pool = self.pool(directory or '/')
        if pool is None:
            return None
        try:
            kind, capacity, _allocation = pool.storageVolLookupByName(name).info()
        except libvirt.libvirtError:
            return None
        return kind, capacity

    def remove(self, pool, name):
        try:
            volume = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return False
        volume.delete(0)
        return True

    def remove_dir(self, parent_path, name):
        """Delete directory parent/name and every file in it (files first, the manifest first of all)."""
        path = '%s/%s' % (parent_path, name)
        pool = self.pool(path)
        if pool is not None:
            entries = self.listing(pool)
            for entry in sorted(entries, key=lambda item: item != MANIFEST):
                self.remove(pool, entry)
            self.release(pool)
        parent = self.pool(parent_path)
        if parent is not None:
            self.remove(parent, name)

    def remove_if_empty(self, parent_path, name):
        """Delete directory parent/name when nothing is left in it; True if it is gone."""
        pool = self.pool('%s/%s' % (parent_path, name))
        if pool is None:
            return True
        empty = not self.listing(pool)
        self.release(pool)
        if empty:
            parent = self.pool(parent_path)
            if parent is not None:
                self.remove(parent, name)
        return empty
