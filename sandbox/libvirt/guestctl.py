"""Drive the vmops test guest on the libvirt sandbox hosts started by ``sandbox/libvirt/up``.

Run with the project venv (it has libvirt-python)::

    .venv/bin/python sandbox/libvirt/guestctl.py define --uri URI NAME [--start] [--wait-boot]
    .venv/bin/python sandbox/libvirt/guestctl.py undefine --uri URI NAME
    .venv/bin/python sandbox/libvirt/guestctl.py wait-boot --uri URI NAME [--timeout 60]
    .venv/bin/python sandbox/libvirt/guestctl.py ticks --uri URI NAME [--last N]
    .venv/bin/python sandbox/libvirt/guestctl.py disk-record --uri URI NAME
    .venv/bin/python sandbox/libvirt/guestctl.py exec --uri URI NAME [--timeout 30] -- CMD...

URI is a host's libvirt URI from hosts.json (``qemu+unix:///system?socket=...``) or its name
(``h1``); ``--uri`` defaults to ``$VMOPS_LIBVIRT_URI``.  Every host keeps its images in its own
``/var/lib/libvirt/images`` (a libvirt ``dir`` pool named ``default``), which this machine sees
under ``<state dir>/hN/lib/images``: the same path on every host, different files, as on real
hosts.  Reports are JSON on stdout; errors go to stderr with exit status 1.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import libvirt

DEFAULT_SANDBOX_DIR = "/var/tmp/vmops-sandbox"
IMAGES_IN_HOST = "/var/lib/libvirt/images"
LIBVIRT_LIB_IN_HOST = "/var/lib/libvirt"
POOL_NAME = "default"
RECORD_SIZE = 512
TICK_OFFSET = 0
MARK_OFFSET = 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BOOT_RE = re.compile(r"vmops-boot id=([0-9a-f-]{36})")
TICK_RE = re.compile(r"vmops-tick boot=([0-9a-f-]{36}) uptime=([0-9]+(?:\.[0-9]+)?) counter=([0-9]+)")
MARK_RE = re.compile(r"vmops-mark boot=(\S+) uptime=([0-9.]+) text=(.*)")
ACPI_RE = re.compile(r"vmops-acpi-shutdown")
FREEZE_RE = re.compile(r"vmops-fsfreeze (freeze|thaw) boot=(\S+) uptime=([0-9.]+)")
AGENT_CHANNEL = "org.qemu.guest_agent.0"
NOT_RUNNING_GRACE_S = 3
HEXDUMP_RE = re.compile(r"^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})")

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class GuestctlError(Exception):
    """An error reported to the user as ``guestctl: error: ...`` with exit status 1."""


@dataclass
class Host:
    """A sandbox host: its libvirt URI and where its files are on this machine."""

    uri: str
    name: str
    state_dir: Path
    sandbox_dir: Path

    @property
    def images(self):
        """The host's images directory as seen from this machine."""
        return self.state_dir / "lib" / "images"

    def local_path(self, path_in_host):
        """Translate a path as the host's libvirt sees it to the same file seen from here."""
        path = str(path_in_host)
        if path == LIBVIRT_LIB_IN_HOST or path.startswith(LIBVIRT_LIB_IN_HOST + "/"):
            return self.state_dir / "lib" / path[len(LIBVIRT_LIB_IN_HOST) + 1:]
        return Path(path)

    def libvirtd_pid(self):
        """The pid of the host's libvirtd when it runs, else None."""
        pid_file = self.state_dir / "libvirtd.pid"
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
            comm = Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            return None
        return pid if comm == "libvirtd" else None

    def guest_files(self):
        """The guest kernel and initramfs built by build-guest."""
        guest = self.sandbox_dir / "cache" / "guest"
        kernel, initrd = guest / "vmlinuz", guest / "initramfs.img"
        for path in (kernel, initrd):
            if not path.is_file():
                raise GuestctlError(f"{path} is missing: run sandbox/libvirt/build-guest")
        return kernel, initrd


def sandbox_dir():
    """The sandbox directory (``$VMOPS_SANDBOX_DIR``)."""
    return Path(os.environ.get("VMOPS_SANDBOX_DIR") or DEFAULT_SANDBOX_DIR)


def find_host(uri):
    """Resolve a URI (or a host name such as ``h1``) to a sandbox Host."""
    base = sandbox_dir()
    hosts_json = base / "libvirt" / "hosts.json"
    if hosts_json.is_file():
        with hosts_json.open(encoding="utf-8") as handle:
            hosts = json.load(handle).get("hosts", [])
        for host in hosts:
            if uri in (host["uri"], host["name"]):
                return Host(host["uri"], host["name"], Path(host["state_dir"]), base)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    sockets = query.get("socket")
    if not sockets:
        raise GuestctlError(f"{uri!r} is neither a host in {hosts_json} nor a sandbox socket URI")
    # <sandbox>/libvirt/hN/run/libvirt-sock
    state_dir = Path(sockets[0]).parent.parent
    return Host(uri, state_dir.name, state_dir, state_dir.parent.parent)


def connect(host):
    """Open a read-write connection to the host's libvirtd."""
    try:
        return libvirt.open(host.uri)
    except libvirt.libvirtError as err:
        raise GuestctlError(f"cannot connect to {host.uri}: {err} (is sandbox/libvirt/up running?)") from err


def lookup(conn, name, missing_ok=False):
    """Look a domain up by name; None (missing_ok) or an error when there is none."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            if missing_ok:
                return None
            raise GuestctlError(f"domain {name!r} not found on {conn.getURI()}") from err
        raise


def state_name(dom):
    """The domain's state as a word (running, paused, shutoff, ...)."""
    state, _reason = dom.state()
    return STATE_NAMES.get(state, str(state))


def check_name(name):
    """Domain names become file names: keep them simple."""
    if not NAME_RE.match(name):
        raise GuestctlError(f"invalid domain name {name!r} (letters, digits, '_', '.', '-'; max 64)")
    return name


def storage_pool(conn):
    """The host's ``default`` pool on /var/lib/libvirt/images, started if needed."""
    try:
        pool = conn.storagePoolLookupByName(POOL_NAME)
    except libvirt.libvirtError as err:
        raise GuestctlError(f"no storage pool {POOL_NAME!r} on {conn.getURI()}: run sandbox/libvirt/up") from err
    if not pool.isActive():
        pool.create(0)
    return pool


def domain_xml(name, memory_mib, vcpus, kernel, initrd, agent=False, fs_disk=False):
    """The persistent definition of a test guest; with agent, the guest agent's channel; with fs_disk,
    a second disk (vdb) that the guest keeps a filesystem on and writes to."""
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = str(vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(kernel)
    ET.SubElement(os_el, "initrd").text = str(initrd)
    ET.SubElement(os_el, "cmdline").text = "console=ttyS0 panic=-1 quiet" + (" vmops.fs=vdb" if fs_disk else "")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    ET.SubElement(devices, "emulator").text = "/usr/bin/qemu-system-x86_64"
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=f"{IMAGES_IN_HOST}/{name}.qcow2")
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    if fs_disk:
        data = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(data, "driver", name="qemu", type="qcow2")
        ET.SubElement(data, "source", file=f"{IMAGES_IN_HOST}/{name}.data.qcow2")
        ET.SubElement(data, "target", dev="vdb", bus="virtio")
    if agent:
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=f"{IMAGES_IN_HOST}/{name}.console.log", append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def volume_xml(name, capacity_mib):
    """A qcow2 volume for the pool."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="MiB").text = str(capacity_mib)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
    perms = ET.SubElement(target, "permissions")
    ET.SubElement(perms, "mode").text = "0644"
    return ET.tostring(vol, encoding="unicode")


def dom_tree(dom, inactive=False):
    """The domain XML as an ElementTree element."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return ET.fromstring(dom.XMLDesc(flags))


def console_log_path(dom):
    """The console log file of the domain's first serial port, as the host sees it."""
    for log in dom_tree(dom).iterfind("./devices/serial/log"):
        if log.get("file"):
            return log.get("file")
    return f"{IMAGES_IN_HOST}/{dom.name()}.console.log"


def read_text(path):
    """A file's text ('' when missing)."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def parse_console(text):
    """Boot ids, ticks and ACPI shutdown lines found in console output."""
    boots = []
    ticks = []
    events = []
    for match in re.finditer(f"{BOOT_RE.pattern}|{TICK_RE.pattern}|{ACPI_RE.pattern}", text):
        if match.group(1):
            events.append(("boot", match.group(1)))
            boot = match.group(1)
        elif match.group(2):
            tick = {"boot": match.group(2), "uptime": float(match.group(3)), "counter": int(match.group(4))}
            ticks.append(tick)
            boot = tick["boot"]
        else:
            events.append(("acpi-shutdown", None))
            continue
        if boot not in boots:
            boots.append(boot)
    acpi = sum(1 for kind, _ in events if kind == "acpi-shutdown")
    return boots, ticks, acpi


def read_log(log_file, offset=0):
    """Console log text from offset ('' when missing)."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_tick(dom, log_file, timeout, offset=None, not_boots=()):
    """Wait for a tick of the guest's current boot and return it.

    Without ``not_boots``: the first tick written to the console log after ``offset`` (default:
    its end when the wait starts); ticks written after the wait started come from the current
    boot.  With ``not_boots``: the newest tick in the whole log once its boot id is none of them
    (for "wait until it has rebooted", race-free whether or not the reboot already happened).
    A domain that stays out of the running state for NOT_RUNNING_GRACE_S is an error (a reboot
    passes through short paused/shutdown states).
    """
    if offset is None:
        offset = log_file.stat().st_size if log_file.exists() else 0
    start = time.monotonic()
    not_running_since = None
    while True:
        state = state_name(dom)
        if state in ("running", "blocked"):
            not_running_since = None
        elif not_running_since is None:
            not_running_since = time.monotonic()
        elif time.monotonic() - not_running_since > NOT_RUNNING_GRACE_S:
            raise GuestctlError(f"domain {dom.name()} is {state}, not running")
        if not_boots:
            _boots, ticks, _acpi = parse_console(read_log(log_file))
            ticks = ticks[-1:] if ticks and ticks[-1]["boot"] not in not_boots else []
        else:
            _boots, ticks, _acpi = parse_console(read_log(log_file, offset))
        if ticks and not_running_since is None:
            return dict(ticks[0], waited_s=round(time.monotonic() - start, 2))
        if time.monotonic() - start > timeout:
            raise GuestctlError(f"no tick from {dom.name()} in {log_file} after {timeout}s")
        time.sleep(0.2)


def emit(obj):
    """Print a JSON report."""
    print(json.dumps(obj, indent=2, sort_keys=False))


def ensure_defined(conn, name, args, host):
    """Create the disk volume and define the domain unless it exists; (domain, created)."""
    dom = lookup(conn, name, missing_ok=True)
    if dom is not None:
        return dom, False
    kernel, initrd = host.guest_files()
    pool = storage_pool(conn)
    volumes = [(f"{name}.qcow2", args.disk_mib)]
    if args.fs_disk_mib:
        volumes.append((f"{name}.data.qcow2", args.fs_disk_mib))
    for vol_name, size_mib in volumes:
        try:
            pool.storageVolLookupByName(vol_name)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
            pool.createXML(volume_xml(vol_name, size_mib), 0)
    xml = domain_xml(name, args.memory_mib, args.vcpus, kernel, initrd, agent=args.agent,
                     fs_disk=bool(args.fs_disk_mib))
    return conn.defineXML(xml), True


def cmd_define(args, host):
    """define: disk in the host's pool + persistent domain; optionally start and wait for boot."""
    name = check_name(args.name)
    conn = connect(host)
    dom, created = ensure_defined(conn, name, args, host)
    log_file = host.local_path(console_log_path(dom))
    report = {"domain": name, "uri": host.uri, "created": created, "console_log": str(log_file),
              "disk": str(host.images / f"{name}.qcow2")}
    if args.start or args.wait_boot:
        offset = None
        report["started"] = not dom.isActive()
        if report["started"]:
            offset = log_file.stat().st_size if log_file.exists() else 0
            t_start = time.monotonic()
            dom.create()
            report["start_s"] = round(time.monotonic() - t_start, 2)
        if args.wait_boot:
            t_boot = time.monotonic()
            report["first_tick"] = wait_for_tick(dom, log_file, args.timeout, offset)
            report["boot_s"] = round(time.monotonic() - t_boot, 2)
    report["state"] = state_name(dom)
    emit(report)


def disk_paths(tree):
    """Source files of the domain's disks and of their backing chains, as the host sees them."""
    paths = []
    for disk in tree.iterfind("./devices/disk"):
        for source in disk.iter("source"):
            if source.get("file"):
                paths.append(source.get("file"))
    return paths


def delete_file(conn, host, path):
    """Delete a file in the host: as a storage volume when libvirt knows it, else directly."""
    try:
        conn.storageVolLookupByPath(path).delete(0)
        return True
    except libvirt.libvirtError:
        pass
    local = host.local_path(path)
    try:
        local.unlink()
        return True
    except FileNotFoundError:
        return False


def cmd_undefine(args, host):
    """undefine: destroy, drop managed save and snapshot metadata, undefine, delete disk + log."""
    name = check_name(args.name)
    conn = connect(host)
    dom = lookup(conn, name, missing_ok=True)
    report = {"domain": name, "uri": host.uri, "existed": dom is not None, "deleted": []}
    candidates = [f"{IMAGES_IN_HOST}/{name}.qcow2", f"{IMAGES_IN_HOST}/{name}.console.log"]
    if dom is not None:
        for tree in (dom_tree(dom), dom_tree(dom, inactive=True)):
            candidates.extend(disk_paths(tree))
        candidates.append(console_log_path(dom))
        if dom.isActive():
            dom.destroy()
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    # Only this guest's own files (NAME.*) in the images dir: a rescue domain also lists the
    # disk of another guest, which must stay.
    prefix = f"{IMAGES_IN_HOST}/{name}."
    try:
        storage_pool(conn).refresh(0)
    except (GuestctlError, libvirt.libvirtError):
        pass
    for path in dict.fromkeys(candidates):
        if path.startswith(prefix) and delete_file(conn, host, path):
            report["deleted"].append(path)
    emit(report)


def cmd_wait_boot(args, host):
    """wait-boot: wait for a tick of the current boot in the console log."""
    conn = connect(host)
    dom = lookup(conn, check_name(args.name))
    log_file = host.local_path(console_log_path(dom))
    tick = wait_for_tick(dom, log_file, args.timeout, not_boots=tuple(args.not_boot or ()))
    emit({"domain": dom.name(), "uri": host.uri, "state": state_name(dom), "tick": tick})


def cmd_host_path(args, host):
    """host-path: this machine's path of each path as the host sees it (one per line)."""
    for path in args.paths:
        print(host.local_path(path))


def cmd_ticks(args, host):
    """ticks: last ticks, boot ids and ACPI shutdowns seen in the console log."""
    conn = connect(host)
    dom = lookup(conn, check_name(args.name))
    log_file = host.local_path(console_log_path(dom))
    text = read_text(log_file)
    boots, ticks, acpi = parse_console(text)
    freezes = [{"event": m.group(1), "boot": m.group(2), "uptime": float(m.group(3))}
               for m in FREEZE_RE.finditer(text)]
    emit({
        "domain": dom.name(),
        "uri": host.uri,
        "state": state_name(dom),
        "console_log": str(log_file),
        "last": ticks[-1] if ticks else None,
        "ticks": ticks[-args.last:] if args.last > 0 else [],
        "tick_count": len(ticks),
        "boots": boots,
        "current_boot": boots[-1] if boots else None,
        "acpi_shutdowns": acpi,
        "fsfreeze": freezes,
    })


def read_disk_bytes(host, path_in_host, fmt, offsets):
    """Read RECORD_SIZE bytes at each offset of a (possibly running) disk image with qemu-io -U.

    Runs inside the host's mount namespace when its libvirtd runs, so that backing files named by
    their in-host paths resolve; otherwise reads the file through this machine's path.
    """
    cmd = ["qemu-io", "-U", "-r", "-f", fmt]
    for offset in offsets:
        cmd += ["-c", f"read -v {offset} {RECORD_SIZE}"]
    pid = host.libvirtd_pid()
    if pid is not None:
        cmd = ["nsenter", "-t", str(pid), "-m", "--"] + cmd + [path_in_host]
    else:
        cmd.append(str(host.local_path(path_in_host)))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0 or "read failed" in proc.stdout:
        raise GuestctlError(f"reading {path_in_host} failed: {(proc.stderr or proc.stdout).strip()}")
    data = bytearray()
    for line in proc.stdout.splitlines():
        match = HEXDUMP_RE.match(line)
        if match:
            data.extend(bytes.fromhex(match.group(1).replace(" ", "")))
    if len(data) != RECORD_SIZE * len(offsets):
        raise GuestctlError(f"unexpected qemu-io output for {path_in_host}: {proc.stdout[:200]!r}")
    return [bytes(data[i * RECORD_SIZE:(i + 1) * RECORD_SIZE]) for i in range(len(offsets))]


def find_disk(tree, target):
    """(source file, format) of the disk with the given target device."""
    for disk in tree.iterfind("./devices/disk"):
        target_el, source = disk.find("target"), disk.find("source")
        if target_el is None or target_el.get("dev") != target:
            continue
        if source is None or not source.get("file"):
            raise GuestctlError(f"disk {target} is not a file")
        driver = disk.find("driver")
        return source.get("file"), (driver.get("type", "raw") if driver is not None else "raw")
    raise GuestctlError(f"no disk {target}")


def parse_record(raw, pattern, fields):
    """(parsed dict or None, record text or None) of a raw disk record."""
    text = raw.rstrip(b"\0").decode("utf-8", errors="replace").rstrip() or None
    match = pattern.fullmatch(text) if text else None
    if not match:
        return None, text
    return {key: conv(value) for (key, conv), value in zip(fields, match.groups())}, text


def cmd_disk_record(args, host):
    """disk-record: the tick record (offset 0) and marker record (1 MiB) on the domain's disk."""
    conn = connect(host)
    dom = lookup(conn, check_name(args.name))
    try:
        path, fmt = find_disk(dom_tree(dom), args.target)
    except GuestctlError as err:
        raise GuestctlError(f"{dom.name()}: {err}") from err
    tick_raw, mark_raw = read_disk_bytes(host, path, fmt, [TICK_OFFSET, MARK_OFFSET])
    tick, tick_text = parse_record(tick_raw, TICK_RE, [("boot", str), ("uptime", float), ("counter", int)])
    mark, mark_text = parse_record(mark_raw, MARK_RE, [("boot", str), ("uptime", float), ("text", str)])
    emit({"domain": dom.name(), "uri": host.uri, "state": state_name(dom), "disk": path,
          "local_path": str(host.local_path(path)), "format": fmt,
          "tick": tick, "tick_raw": tick_text, "mark": mark, "mark_raw": mark_text})


class ConsoleSession:
    """A console connection to a domain through a libvirt stream (needs the default event loop)."""

    def __init__(self, dom, force=False):
        """Open the domain's console (serial 0)."""
        self.stream = dom.connect().newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
        try:
            dom.openConsole(None, self.stream, flags)
        except libvirt.libvirtError as err:
            raise GuestctlError(f"cannot open the console of {dom.name()}: {err} (--force takes it over)") from err
        self.buffer = bytearray()
        self.closed = None
        self.stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE
                                     | libvirt.VIR_STREAM_EVENT_ERROR
                                     | libvirt.VIR_STREAM_EVENT_HANGUP, self._on_event, None)
        self.timer = libvirt.virEventAddTimeout(100, lambda _timer, _opaque: None, None)

    def _on_event(self, stream, events, _opaque):
        """Stream callback: collect console output."""
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError as err:
                    self.closed = f"console stream error: {err}"
                    return
                if data == -2:
                    break
                if not data:
                    self.closed = "console closed (domain stopped?)"
                    return
                self.buffer.extend(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.closed = "console stream hung up"

    def send(self, data, deadline):
        """Send bytes to the console."""
        while data:
            sent = self.stream.send(data)
            if sent == -2:
                if time.monotonic() > deadline:
                    raise GuestctlError("timed out writing to the console")
                libvirt.virEventRunDefaultImpl()
                continue
            data = data[sent:]

    def run_until(self, predicate, deadline):
        """Run the event loop until predicate(buffer) is true; False on timeout."""
        while not predicate(self.buffer):
            if self.closed:
                raise GuestctlError(self.closed)
            if time.monotonic() > deadline:
                return False
            libvirt.virEventRunDefaultImpl()
        return True

    def close(self):
        """Release the stream and timer."""
        libvirt.virEventRemoveTimeout(self.timer)
        try:
            self.stream.eventRemoveCallback()
            self.stream.finish()
        except libvirt.libvirtError:
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass


def console_command(dom, command, timeout, force=False):
    """Run a command line in the guest's console shell; (exit status, output)."""
    token = uuid.uuid4().hex[:12]
    # The printf formats make the markers differ from the echoed command line.
    line = f"printf 'VMOPSX-%s-{token}\\n' S; {command}; printf 'VMOPSX-%s-{token} rc=%d\\n' E $?\n"
    answer_re = re.compile(rf"VMOPSX-S-{token}\r?\n(.*?)VMOPSX-E-{token} rc=(\d+)\r?\n".encode(), re.DOTALL)
    deadline = time.monotonic() + timeout
    session = ConsoleSession(dom, force=force)
    try:
        session.send(b"\n" + line.encode(), deadline)
        finished = session.run_until(lambda buf: answer_re.search(buf) is not None, deadline)
        output = bytes(session.buffer)
        if not finished:
            # Interrupt the command (Ctrl-C) so the shell is free for the next exec.
            session.send(b"\x03", time.monotonic() + 2)
            session.run_until(lambda _buf: False, time.monotonic() + 0.3)
    finally:
        session.close()
    answer = answer_re.search(output)
    if answer is None:
        partial = output.decode("utf-8", errors="replace")[-500:]
        raise GuestctlError(f"no answer from {dom.name()} within {timeout}s; console said: {partial!r}")
    body = answer.group(1).decode("utf-8", errors="replace").replace("\r", "")
    return int(answer.group(2)), "\n".join(ln for ln in body.split("\n") if not TICK_RE.search(ln))


def cmd_exec(args, host):
    """exec: run a shell command line in the guest through its console; print its output."""
    command = " ".join(args.command).strip()
    if not command:
        raise GuestctlError("no command given (exec --uri URI NAME -- CMD...)")
    if "\n" in command:
        raise GuestctlError("the command must be a single line")
    libvirt.virEventRegisterDefaultImpl()
    conn = connect(host)
    try:
        dom = lookup(conn, check_name(args.name))
        if state_name(dom) != "running":
            raise GuestctlError(f"domain {dom.name()} is {state_name(dom)}, not running")
        rc, text = console_command(dom, command, args.timeout, args.force)
    finally:
        conn.close()
    if args.json:
        emit({"domain": args.name, "uri": host.uri, "command": command, "rc": rc, "output": text})
    else:
        sys.stdout.write(text)
    return rc


def build_parser():
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="guestctl.py", description="Drive vmops test guests on the libvirt sandbox hosts.")
    sub = parser.add_subparsers(dest="command_name", required=True)

    def add(name, func, help_text):
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("--uri", default=os.environ.get("VMOPS_LIBVIRT_URI"),
                                help="host URI or name (h1); default $VMOPS_LIBVIRT_URI")
        sub_parser.add_argument("name", metavar="NAME", help="domain name")
        sub_parser.set_defaults(func=func)
        return sub_parser

    define = add("define", cmd_define, "define a test guest (idempotent)")
    define.add_argument("--memory-mib", type=int, default=128, help="guest RAM (default 128, min 96)")
    define.add_argument("--disk-mib", type=int, default=48, help="qcow2 disk size (default 48)")
    define.add_argument("--vcpus", type=int, default=1, help="virtual CPUs (default 1)")
    define.add_argument("--agent", action="store_true", help="give it the guest agent's channel "
                        f"({AGENT_CHANNEL}): the guest runs qemu-ga, whose freeze hook logs to the console")
    define.add_argument("--fs-disk-mib", type=int, default=0, metavar="MIB",
                        help="a second disk (vdb) of this size holding an ext2 filesystem the guest writes "
                        "a line to every second (/data/vmops.log)")
    define.add_argument("--start", action="store_true", help="start it (when not running)")
    define.add_argument("--wait-boot", action="store_true", help="start it and wait for its first tick")
    define.add_argument("--timeout", type=float, default=90, help="--wait-boot timeout (s)")

    add("undefine", cmd_undefine, "destroy, undefine and delete a test guest (idempotent)")

    wait = add("wait-boot", cmd_wait_boot, "wait for a tick of the current boot")
    wait.add_argument("--timeout", type=float, default=60, help="seconds (default 60)")
    wait.add_argument("--not-boot", action="append", metavar="BOOT_ID",
                      help="wait for a boot other than this one (repeatable): after a reboot")

    paths = sub.add_parser("host-path", help="print where a host's file is on this machine",
                           description="Translate paths as a sandbox host sees them (e.g. "
                           "/var/lib/libvirt/images/x.qcow2 from domblklist) to this machine's paths.")
    paths.add_argument("--uri", default=os.environ.get("VMOPS_LIBVIRT_URI"),
                       help="host URI or name (h1); default $VMOPS_LIBVIRT_URI")
    paths.add_argument("paths", nargs="+", metavar="PATH")
    paths.set_defaults(func=cmd_host_path)

    ticks = add("ticks", cmd_ticks, "JSON: last ticks, boot ids, ACPI shutdowns from the console log")
    ticks.add_argument("--last", type=int, default=1, help="how many ticks to list (default 1)")

    disk = add("disk-record", cmd_disk_record, "JSON: tick and marker records on the guest's disk")
    disk.add_argument("--target", default="vda", help="disk target (default vda)")

    exe = add("exec", cmd_exec, "run a command in the guest over its console")
    exe.usage = "guestctl.py exec [-h] [--uri URI] [--timeout S] [--force] [--json] NAME -- CMD..."
    exe.add_argument("--timeout", type=float, default=30, help="seconds (default 30)")
    exe.add_argument("--force", action="store_true", help="take the console over from another client")
    exe.add_argument("--json", action="store_true", help="print {rc, output} as JSON")
    exe.epilog = "Everything after -- is the command line, run by the guest's shell (words joined with spaces)."
    return parser


def main(argv=None):
    """Entry point: returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    args = build_parser().parse_args(argv)
    args.command = command
    # libvirt prints every error to stderr by default; errors are reported here instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        if not args.uri:
            raise GuestctlError("--uri is required (or set VMOPS_LIBVIRT_URI)")
        host = find_host(args.uri)
        return args.func(args, host) or 0
    except GuestctlError as err:
        print(f"guestctl: error: {err}", file=sys.stderr)
        return 1
    except libvirt.libvirtError as err:
        print(f"guestctl: error: libvirt: {err}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as err:
        print(f"guestctl: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
