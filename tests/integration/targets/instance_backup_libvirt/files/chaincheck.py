"""Independent look at instance_backup's chains on a libvirt sandbox host (never through the collection).

  chaincheck.py --uri URI amend PATH        -> qcow2 compat 1.1 for a stopped domain's disk (test setup)
  chaincheck.py --uri URI image PATH        -> {"exists", "format", "compat", "backing", "virtual_size",
                                               "disk_size", "check_ok", "marks": {"1": text, ...}}
  chaincheck.py --uri URI points DIR        -> {"entries": [...], "manifests": {name: manifest or null},
                                               "sizes": {name: {file: disk size}}} of a domain's store dir
  chaincheck.py --uri URI checkpoints DOMAIN -> {"names": [...]} libvirt's checkpoints of the domain
  chaincheck.py --uri URI rmtree DIR        -> removes a directory on the host (test setup and cleanup)
  chaincheck.py --uri URI fslog PATH        -> {"fsck_ok", "fsck": text, "lines": [{"boot", "uptime", "counter"}]}
                                               the guest's /vmops.log read out of the ext2 filesystem in a
                                               standalone qcow2 (e2fsck -fn, debugfs), never mounted

PATH and DIR are paths as the host sees them; guestctl maps them to this machine. Marks are records
written by the guest at MARK_SECTORS (vmops-record) and read here with qemu-io.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import libvirt

HEX_RE = re.compile(r'^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})')
MARK_SECTORS = {'1': 4096, '2': 6144, '3': 8192}
FSLINE_RE = re.compile(r'vmops-fsline boot=(\S+) uptime=([0-9.]+) counter=([0-9]+)')


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
    return data.decode('ascii', errors='replace').strip(' \n\x00') or None


def image(local):
    if not os.path.exists(local):
        return {'exists': False}
    info = json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output=json', local], check=True,
                                     capture_output=True, text=True).stdout)
    seen = {'exists': True, 'format': info.get('format'), 'backing': info.get('backing-filename'),
            'compat': (info.get('format-specific') or {}).get('data', {}).get('compat'),
            'virtual_size': info.get('virtual-size'), 'disk_size': info.get('actual-size'),
            'check_ok': None, 'marks': None}
    if seen['backing'] is None:     # a backing path is the host's own, not readable from here
        check = subprocess.run(['qemu-img', 'check', '-U', local], capture_output=True, text=True, check=False)
        seen.update(check_ok=check.returncode == 0,
                    marks={mark: read_record(local, sector * 512) for mark, sector in MARK_SECTORS.items()})
    return seen


def fslog(local):
    """The guest's own log from the filesystem in a qcow2, checked read-only by e2fsck first."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'fs.raw')
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw', local, raw], check=True)
        fsck = subprocess.run(['e2fsck', '-fn', raw], capture_output=True, text=True, check=False)
        cat = subprocess.run(['debugfs', '-R', 'cat /vmops.log', raw], capture_output=True, text=True, check=False)
    lines = [{'boot': m.group(1), 'uptime': float(m.group(2)), 'counter': int(m.group(3))}
             for m in FSLINE_RE.finditer(cat.stdout)]
    return {'fsck_ok': fsck.returncode == 0, 'fsck': (fsck.stdout + fsck.stderr)[-2000:], 'lines': lines}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--uri', required=True)
    parser.add_argument('--guestctl', required=True)
    parser.add_argument('command', choices=['amend', 'image', 'points', 'checkpoints', 'rmtree', 'fslog'])
    parser.add_argument('path')
    args = parser.parse_args()
    host = guestctl(args.guestctl).find_host(args.uri)
    local = str(host.local_path(args.path))
    if args.command == 'amend':
        subprocess.run(['qemu-img', 'amend', '-o', 'compat=1.1', local], check=True)
        print(json.dumps(image(local)))
    elif args.command == 'image':
        print(json.dumps(image(local)))
    elif args.command == 'points':
        entries = sorted(os.listdir(local)) if os.path.isdir(local) else []
        manifests, sizes = {}, {}
        for entry in entries:
            try:
                with open(os.path.join(local, entry, 'manifest.json'), encoding='utf-8') as handle:
                    manifests[entry] = json.load(handle)
            except FileNotFoundError:
                manifests[entry] = None
            sizes[entry] = {name: os.stat(os.path.join(local, entry, name)).st_blocks * 512
                            for name in os.listdir(os.path.join(local, entry)) if name.endswith('.qcow2')}
        print(json.dumps({'entries': entries, 'manifests': manifests, 'sizes': sizes}))
    elif args.command == 'checkpoints':
        conn = libvirt.open(args.uri)
        try:
            names = sorted(cp.getName() for cp in conn.lookupByName(args.path).listAllCheckpoints(0))
        except libvirt.libvirtError:
            names = []
        print(json.dumps({'names': names}))
    elif args.command == 'fslog':
        print(json.dumps(fslog(local)))
    elif args.command == 'rmtree':
        if not args.path.startswith(('/var/lib/libvirt/images/', '/var/tmp/vmops-ibk-it-')):
            sys.exit('refusing to remove %s' % args.path)
        shutil.rmtree(local, ignore_errors=True)
        print(json.dumps({'removed': args.path}))


if __name__ == '__main__':
    main()
