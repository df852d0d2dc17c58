"""Benchmark: how long a libvirt instance_snapshot or instance_backup stalls a running guest, against a cold copy.

For each disk size (default 64 MiB and 1 GiB, each filled with data from the host before boot), a sandbox
guest (sandbox/libvirt/guestctl.py) on host h1 prints its uptime as fast as it can on its serial console.
The benchmark reads that stream with a host timestamp per line, and listens to libvirt's lifecycle
events, while it takes, in the same run, on the same guest:

  * snapshot: instance_snapshot's libvirt driver (push-mode backup, virDomainBackupBegin), the module's
    own code through module_utils, exactly what the module runs;
  * cold:     pause (virDomainSuspend), copy the disk (qemu-img convert of the qcow2 file), resume;
  * backup_full, backup_incr: instance_backup's libvirt driver (LibvirtBackupSets through BackupRun, a
    checkpoint and a push-mode backup job, full or incremental on the previous point), also the module's
    own code. The first full of the series is taken before the measurements.

`--iothread` gives the disk an IOThread (QEMU runs its block layer, and so the backup job's copy, in a
thread of its own instead of the main loop).

`--dirty-background-bytes N` sets this machine's vm.dirty_background_bytes to N for the run and puts the
previous vm.dirty_background_* settings back afterwards (the sandbox's libvirtds share this kernel). QEMU
flushes whatever the kernel has not written back of a backup when the job ends, holding its global lock:
this is where a full's stall comes from (plugins/module_utils/libvirt/writeback.py).

Guest-visible pause = the largest "stall" between two console lines: host time that passed minus
guest time that passed (a paused guest's clock stands still, so a pause shows as a stall; guest
scheduling noise of the loaded machine shows in the baseline). libvirt's view = time from the
SUSPENDED to the RESUMED event. libvirt calls are counted per method.

Run:  .venv/bin/python bench/snapshot_pause_libvirt.py [--uri h1] [--sizes 64,1024] [--runs 3] [--json out.json]
      [--methods snapshot,cold,backup_full,backup_incr] [--iothread] [--dirty-background-bytes 67108864]
Needs sandbox/libvirt/up. Uses the domain vmops-snap-bench-<size> and removes it (and its copies) afterwards.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import libvirt

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
GUESTCTL = os.path.join(REPO, 'sandbox', 'libvirt', 'guestctl.py')
sys.path.insert(0, os.path.join(REPO, 'sandbox', 'libvirt'))
import guestctl  # noqa: E402  pylint: disable=wrong-import-position


def collection_path():
    """Make `ansible_collections.vmops.lifecycle` importable from this checkout."""
    build = os.path.join(REPO, '.build', 'collections')
    link = os.path.join(build, 'ansible_collections', 'vmops', 'lifecycle')
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    sys.path.insert(0, build)


collection_path()
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import LibvirtBackend  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.snapshot import LibvirtSnapshots  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import (  # noqa: E402
    SnapshotRequest, ensure_snapshot)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backup_chain import (  # noqa: E402
    BackupRequest, BackupRun)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.incremental import (  # noqa: E402
    LibvirtBackupSets)

FAST = re.compile(r'F ([0-9]+\.[0-9]+)')
BACKUP_DIR = '/var/lib/libvirt/images/vmops-bench-backups'


class Console(object):
    """Reads the guest console in a thread; keeps (host monotonic time, guest uptime) per line."""

    def __init__(self, conn, dom):
        self.stream = conn.newStream(0)
        dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.samples = []
        self.buffer = ''
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.stream.recv(4096)
            except libvirt.libvirtError:
                return
            now = time.monotonic()
            if not isinstance(data, bytes) or not data:
                if data == -2:
                    time.sleep(0.001)
                    continue
                return
            self.buffer += data.decode('ascii', errors='replace')
            *lines, self.buffer = self.buffer.split('\n')
            for line in lines:
                match = FAST.search(line)
                if match:
                    self.samples.append((now, float(match.group(1))))

    def send(self, text):
        self.stream.send(text.encode('ascii'))

    def close(self):
        self.running = False
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass


class Events(object):
    """libvirt lifecycle events of one domain, with host monotonic timestamps."""

    def __init__(self, conn, dom):
        self.seen = []
        self.uuid = dom.UUIDString()
        self.callback = conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on, None)

    def _on(self, conn, dom, event, detail, opaque):  # pylint: disable=unused-argument
        self.seen.append((time.monotonic(), event, detail))

    def paused_seconds(self, start, end):
        total, since = 0.0, None
        for moment, event, _detail in self.seen:
            if moment < start or moment > end:
                continue
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED and since is None:
                since = moment
            elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED and since is not None:
                total += moment - since
                since = None
        return round(total, 4)


def stalls(samples, start, end):
    """Largest stall (host time minus guest time between consecutive lines) inside [start, end]."""
    worst = 0.0
    for (h0, g0), (h1, g1) in zip(samples, samples[1:]):
        if h1 < start or h0 > end:
            continue
        worst = max(worst, (h1 - h0) - (g1 - g0))
    return round(worst, 4)


def guestctl_run(*args):
    out = subprocess.run([sys.executable, GUESTCTL] + list(args), check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip().startswith('{') else out.stdout


def with_iothread(conn, name):
    """Redefine the (stopped) domain with one IOThread that serves its disk."""
    import xml.etree.ElementTree as ET  # pylint: disable=import-outside-toplevel
    tree = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if tree.find('iothreads') is None:
        ET.SubElement(tree, 'iothreads').text = '1'
    for driver in tree.iterfind('./devices/disk/driver'):
        driver.set('iothread', '1')
    conn.defineXML(ET.tostring(tree, encoding='unicode'))


def prepare(host, name, size_mib, iothread=False):
    guestctl_run('undefine', '--uri', host.uri, name)
    guestctl_run('define', '--uri', host.uri, name, '--disk-mib', str(size_mib))
    disk = str(host.local_path('%s/%s.qcow2' % (guestctl.IMAGES_IN_HOST, name)))
    # Real data in the disk (from 2 MiB on: the guest's own records live below).
    # (In requests of at most 1 GiB: qemu-io refuses larger ones.)
    writes = ['write -P 0x5a %dM %dM' % (at, min(1024, size_mib - at)) for at in range(2, size_mib, 1024)]
    subprocess.run(['qemu-io', '-f', 'qcow2'] + [arg for write in writes for arg in ('-c', write)] + [disk],
                   check=True, capture_output=True)
    # qcow2 v3: instance_backup's checkpoints are persistent dirty bitmaps in the disk file.
    subprocess.run(['qemu-img', 'amend', '-f', 'qcow2', '-o', 'compat=1.1', disk], check=True, capture_output=True)
    if iothread:
        conn = libvirt.open(host.uri)
        try:
            with_iothread(conn, name)
        finally:
            conn.close()
    guestctl_run('define', '--uri', host.uri, name, '--start', '--wait-boot', '--timeout', '120')
    return disk


BEGIN_CALLS = []
_ORIGINAL_BACKUP_BEGIN = libvirt.virDomain.backupBegin


def _timed_backup_begin(self, *args, **kwargs):
    started = time.monotonic()
    try:
        return _ORIGINAL_BACKUP_BEGIN(self, *args, **kwargs)
    finally:
        BEGIN_CALLS.append((started, time.monotonic()))


# Only to learn when backupBegin ran (to tell the start of the job from the copy that follows).
libvirt.virDomain.backupBegin = _timed_backup_begin


def snapshot_once(uri, name, run):
    with LibvirtBackend(uri) as backend:
        driver = LibvirtSnapshots(backend, BACKUP_DIR)
        try:
            request = SnapshotRequest(instance=name, state='present', name='bench-%d' % run, series=None,
                                      retention=None, include_volumes=False, quiesce='auto', metadata=None,
                                      backup_dir=BACKUP_DIR, wait=True, timeout=600)
            result = ensure_snapshot(driver, request)
        finally:
            driver.close()
    return result['timings']


def backup_once(uri, name, run, mode):
    """One instance_backup point (mode full or incremental), as the module takes it."""
    with LibvirtBackend(uri) as backend:
        request = BackupRequest(instance=name, state='present', series='bench', point=None, mode=mode,
                                full_every=1000, retention=None, quiesce='auto', restore_as=None,
                                name='bench-%s-%d' % (mode, run), timeout=600, backup_dir=BACKUP_DIR)
        sets = LibvirtBackupSets.for_request(backend, request)
        try:
            result = BackupRun(sets, request).result()
        finally:
            sets.close()
    return {'copy_seconds': result['timings']['total_seconds'], 'libvirt_calls': result['instance']['api_requests']}


def cold_once(dom, disk, run):
    target = '%s.cold-%d.qcow2' % (disk[:-len('.qcow2')], run)
    calls = 0
    started = time.monotonic()
    dom.suspend()
    calls += 1
    try:
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'qcow2', disk, target], check=True, capture_output=True)
    finally:
        dom.resume()
        calls += 1
    seconds = time.monotonic() - started
    os.unlink(target)
    return {'copy_seconds': round(seconds, 3), 'libvirt_calls': calls}


def measure(conn, host, name, size_mib, runs, window, methods=('snapshot', 'cold'), iothread=False):
    window = window + size_mib // 40     # the guest must tick through the whole copy
    try:
        disk = prepare(host, name, size_mib, iothread)
    except Exception:
        guestctl_run('undefine', '--uri', host.uri, name)
        raise
    dom = conn.lookupByName(name)
    if 'backup_incr' in methods:
        backup_once(host.uri, name, -1, 'full')     # the parent of the first increment
    events = Events(conn, dom)
    console = Console(conn, dom)
    rows = []
    try:
        for run in range(runs):
            for method in methods:
                if method == 'backup_incr':
                    # Something for the increment to copy (the tick loop writes nothing to the disk); before
                    # the loop, which holds the console's shell.
                    console.send('\ndd if=/dev/urandom of=/dev/vda bs=1M count=16 seek=512 oflag=direct 2>/dev/null\n')
                    time.sleep(3)
                # The guest prints its uptime in a tight loop (shell builtins only: no fork) for `window` s.
                console.send('\nread u r < /proc/uptime; e=$((${u%%.*}+%d)); s=0; '
                             'while [ $s -lt $e ]; do read u r < /proc/uptime; echo "F $u"; s=${u%%.*}; done\n'
                             % window)
                time.sleep(2.5)
                before = len(console.samples)
                baseline = stalls(console.samples, time.monotonic() - 2.0, time.monotonic())
                start = time.monotonic()
                del BEGIN_CALLS[:]
                if method == 'snapshot':
                    timings = snapshot_once(host.uri, name, run * 2)
                elif method == 'backup_full':
                    timings = backup_once(host.uri, name, run, 'full')
                elif method == 'backup_incr':
                    timings = backup_once(host.uri, name, run, 'incremental')
                else:
                    timings = cold_once(dom, disk, run)
                end = time.monotonic()
                time.sleep(0.5)
                if BEGIN_CALLS:
                    begin0, begin1 = BEGIN_CALLS[0]
                    at_start = stalls(console.samples, begin0 - 0.02, begin1 + 0.1)
                    during = stalls(console.samples, begin1 + 0.1, end + 0.3)
                else:
                    at_start = during = None
                rows.append({
                    'stall_at_job_start_s': at_start, 'stall_during_copy_s': during,
                    'samples_after_end': len([h for h, _g in console.samples if h > end]),
                    'size_mib': size_mib, 'method': method, 'run': run, 'iothread': iothread,
                    'backup_begin_s': round(BEGIN_CALLS[0][1] - BEGIN_CALLS[0][0], 4) if BEGIN_CALLS else None,
                    'guest_stall_s': stalls(console.samples, start - 0.05, end + 0.3),
                    'baseline_stall_s': baseline, 'libvirt_paused_s': events.paused_seconds(start, end + 0.3),
                    'operation_s': round(end - start, 3), 'copy_s': timings.get('copy_seconds'),
                    'libvirt_calls': timings.get('libvirt_calls'),
                    'module_guest_paused_s': timings.get('guest_paused_seconds'),
                    'lines': len(console.samples) - before,
                })
                print(json.dumps(rows[-1]), flush=True)
                time.sleep(max(0.0, window + 2.0 - (time.monotonic() - start)))
    finally:
        console.close()
        guestctl_run('undefine', '--uri', host.uri, name)
        subprocess.run(['rm', '-rf', str(host.local_path('%s/%s' % (BACKUP_DIR, name)))], check=False)
        subprocess.run(['rmdir', '--ignore-fail-on-non-empty', str(host.local_path(BACKUP_DIR))], check=False)
    return rows


METHOD_NAMES = {'snapshot': 'instance_snapshot (backup API)', 'backup_full': 'instance_backup full',
                'backup_incr': 'instance_backup incremental (16 MiB changed)', 'cold': 'cold (pause, copy, resume)'}


def table(rows):
    lines = ['| disk | method | guest-visible pause (max stall over the operation), median / max | '
             'stall at backupBegin, median / max | baseline stall (2 s before) | libvirt paused (events) | '
             'operation time | libvirt calls |',
             '|---|---|---|---|---|---|---|---|']
    summary = {}
    for size in sorted(set(r['size_mib'] for r in rows)):
        for method in METHOD_NAMES:
            sel = [r for r in rows if r['size_mib'] == size and r['method'] == method]
            if not sel:
                continue
            stall = [r['guest_stall_s'] for r in sel]
            summary[(size, method)] = statistics.median(stall)
            begin = [r['stall_at_job_start_s'] for r in sel if r['stall_at_job_start_s'] is not None]
            lines.append('| %d MiB | %s | %.0f / %.0f ms | %s | %.0f ms | %.0f ms | %.2f s | %s |' % (
                size, METHOD_NAMES[method],
                statistics.median(stall) * 1000, max(stall) * 1000,
                ('%.0f / %.0f ms' % (statistics.median(begin) * 1000, max(begin) * 1000)) if begin else '-',
                statistics.median(r['baseline_stall_s'] for r in sel) * 1000,
                statistics.median(r['libvirt_paused_s'] for r in sel) * 1000,
                statistics.median(r['operation_s'] for r in sel), sel[0]['libvirt_calls']))
    ratios = []
    for size in sorted(set(r['size_mib'] for r in rows)):
        cold = summary.get((size, 'cold'))
        for method in METHOD_NAMES:
            ours = summary.get((size, method))
            if method != 'cold' and ours is not None and cold is not None:
                ratios.append('%d MiB: cold pause / %s pause = %.1fx' % (size, method, cold / max(ours, 0.001)))
    return '\n'.join(lines), ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--uri', default='h1', help='sandbox host name or URI (default h1)')
    parser.add_argument('--sizes', default='64,1024', help='disk sizes in MiB, comma separated')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--window', type=int, default=6, help='seconds of guest ticking per measurement')
    parser.add_argument('--json', help='write every measurement to this file')
    parser.add_argument('--methods', default='snapshot,cold', help='of %s, comma separated' % ', '.join(METHOD_NAMES))
    parser.add_argument('--iothread', action='store_true', help='give the guest\'s disk an IOThread')
    parser.add_argument('--dirty-background-bytes', type=int,
                        help='vm.dirty_background_bytes for the run (restored afterwards)')
    args = parser.parse_args()
    saved = set_writeback(args.dirty_background_bytes) if args.dirty_background_bytes else None
    try:
        run(args)
    finally:
        if saved:
            restore_writeback(saved)


VM = '/proc/sys/vm/'


def set_writeback(value):
    saved = {}
    for name in ('dirty_background_bytes', 'dirty_background_ratio'):
        with open(VM + name, encoding='ascii') as handle:
            saved[name] = int(handle.read())
    with open(VM + 'dirty_background_bytes', 'w', encoding='ascii') as handle:
        handle.write(str(value))
    return saved


def restore_writeback(saved):
    # Writing one of the pair zeroes the other: write back the one that was in force.
    name = 'dirty_background_bytes' if saved['dirty_background_bytes'] else 'dirty_background_ratio'
    with open(VM + name, 'w', encoding='ascii') as handle:
        handle.write(str(saved[name]))


def run(args):
    host = guestctl.find_host(args.uri)
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)], daemon=True).start()
    conn = libvirt.open(host.uri)
    rows = []
    for size in [int(s) for s in args.sizes.split(',')]:
        rows.extend(measure(conn, host, 'vmops-snap-bench-%d' % size, size, args.runs, args.window,
                            args.methods.split(','), args.iothread))
    for row in rows:
        row['dirty_background_bytes'] = args.dirty_background_bytes
    text, ratios = table(rows)
    print(text)
    for line in ratios:
        print(line)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'rows': rows, 'table': text, 'ratios': ratios}, handle, indent=1)


if __name__ == '__main__':
    main()
