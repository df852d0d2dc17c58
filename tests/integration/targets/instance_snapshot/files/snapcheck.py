"""Independent look at libvirt backups and snapshots for the instance_snapshot tests.

Reads the host's files directly (qemu-io, qemu-img, the manifest as a file) and libvirt's snapshot
list, never through the collection:

  snapcheck.py --uri URI record PATH      -> {"exists", "format", "backing", "mark", "tick"} of a qcow2 file
  snapcheck.py --uri URI ls DIR           -> {"exists", "entries": [...]} of a directory on the host
  snapcheck.py --uri URI manifest DIR     -> the manifest.json of a backup directory (or null)
  snapcheck.py --uri URI internal DOMAIN  -> {"libvirt": [names], "qcow2": [names in the disk file]}
  snapcheck.py --uri URI read FILE        -> {"exists", "text"} of a small file on the host
  snapcheck.py --uri URI rmtree DIR       -> removes a directory on the host (test cleanup only)

PATH and DIR are paths as the host sees them; the sandbox maps them to this machine.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import libvirt

HEX_RE = re.compile(r'^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})')
MARK_OFFSET = 1024 * 1024


def guestctl(path):
    sys.path.insert(0, os.path.dirname(path))
    import guestctl as module  # pylint: disable=import-outside-toplevel
    return module


def read_record(local, offset):
    out = subprocess.run(['qemu-io', '-r', '-U', '-f', 'qcow2', '-c', 'read -v %d 512' % offset, local],
                         check=True, capture_output=True, text=True).stdout
    data = bytearray()
    for line in out.splitlines():
        match = HEX_RE.match(line)
        if match:
            data.extend(bytes.fromhex(match.group(1).replace(' ', '')))
    text = data.decode('ascii', errors='replace').strip(' \n\x00')
    return text or None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--uri', required=True)
    parser.add_argument('--guestctl', default=os.path.join(os.path.dirname(__file__), 'guestctl.py'))
    parser.add_argument('command', choices=['record', 'ls', 'manifest', 'internal', 'read', 'rmtree'])
    parser.add_argument('path')
    args = parser.parse_args()
    host = guestctl(args.guestctl).find_host(args.uri)
    local = str(host.local_path(args.path))
    if args.command == 'record':
        if not os.path.exists(local):
            print(json.dumps({'exists': False}))
            return
        info = json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output=json', local], check=True,
                                         capture_output=True, text=True).stdout)
        print(json.dumps({'exists': True, 'format': info.get('format'), 'backing': info.get('backing-filename'),
                          'virtual_size': info.get('virtual-size'),
                          'tick': read_record(local, 0), 'mark': read_record(local, MARK_OFFSET)}))
    elif args.command == 'ls':
        exists = os.path.isdir(local)
        print(json.dumps({'exists': exists, 'entries': sorted(os.listdir(local)) if exists else []}))
    elif args.command == 'manifest':
        try:
            with open(os.path.join(local, 'manifest.json'), encoding='utf-8') as handle:
                print(json.dumps(json.load(handle)))
        except FileNotFoundError:
            print('null')
    elif args.command == 'internal':
        conn = libvirt.open(args.uri)
        dom = conn.lookupByName(args.path)
        disk = ET.fromstring(dom.XMLDesc(0)).find('./devices/disk/source').get('file')
        out = subprocess.run(['qemu-img', 'snapshot', '-U', '-l', str(host.local_path(disk))], check=True,
                             capture_output=True, text=True).stdout
        qcow2 = [line.split()[1] for line in out.splitlines()[2:] if line.split()]
        print(json.dumps({'libvirt': sorted(dom.snapshotListNames(0)), 'qcow2': sorted(qcow2)}))
    elif args.command == 'read':
        try:
            with open(local, encoding='utf-8') as handle:
                print(json.dumps({'exists': True, 'text': handle.read()}))
        except FileNotFoundError:
            print(json.dumps({'exists': False, 'text': None}))
    elif args.command == 'rmtree':
        if not args.path.startswith('/var/lib/libvirt/images/'):
            sys.exit('refusing to remove %s' % args.path)
        shutil.rmtree(local, ignore_errors=True)
        print(json.dumps({'removed': args.path}))


if __name__ == '__main__':
    main()
