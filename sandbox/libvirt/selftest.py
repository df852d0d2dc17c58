"""End-to-end check of the libvirt sandbox (run after ``sandbox/libvirt/up``, needs 2 hosts).

    .venv/bin/python sandbox/libvirt/selftest.py [--keep]

Boots st-a and st-b on h1 and st-c on h2, then proves with the guests' own records that:
suspend/resume and managedsave/start keep the boot (same boot id, counter and uptime continue);
ACPI shutdown reaches the guest (vmops-acpi-shutdown) and the domain shuts off; a marker written
in the guest is on its disk; reboot() starts a new boot; live migration h1 -> h2 -> h1 (migrateToURI3 LIVE|PEER2PEER|
PERSIST_DEST|UNDEFINE_SOURCE|NON_SHARED_DISK) keeps the boot and the disk.  Prints timings.
The st-* guests are undefined at the end unless --keep.  Exit status 1 on the first failure.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

HERE = Path(__file__).resolve().parent
GUESTCTL = [sys.executable, str(HERE / "guestctl.py")]
GUESTS = {"st-a": 0, "st-b": 0, "st-c": 1}   # name -> index of its host in hosts.json
MIGRATE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                 | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
                 | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
TIMINGS = {}


class CheckFailed(Exception):
    """A selftest assertion failed."""


def check(condition, message):
    """Fail the test with message unless condition holds."""
    if not condition:
        raise CheckFailed(message)
    print(f"  ok: {message}")


def guestctl(*args, parse=True):
    """Run guestctl.py; its JSON report (or text)."""
    proc = subprocess.run(GUESTCTL + list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CheckFailed(f"guestctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout) if parse else proc.stdout


def timed(label, func, *args):
    """Call func(*args), recording its duration under label."""
    start = time.monotonic()
    result = func(*args)
    TIMINGS[label] = round(time.monotonic() - start, 2)
    return result


def last_tick(uri, name):
    """The newest tick in the console log."""
    return guestctl("ticks", "--uri", uri, name)


def wait_state(dom, wanted, timeout):
    """Poll until the domain reaches a state."""
    deadline = time.monotonic() + timeout
    while dom.state()[0] != wanted:
        if time.monotonic() > deadline:
            raise CheckFailed(f"{dom.name()} did not reach state {wanted} in {timeout}s")
        time.sleep(0.1)


def qemu_rss_mib(host, name):
    """Resident memory of the guest's QEMU process."""
    pid = (Path(host["state_dir"]) / "run" / "qemu" / f"{name}.pid").read_text(encoding="ascii").strip()
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    return None


def continued(before, after, what):
    """The guest did not reboot: same boot id, counter and uptime moved on."""
    check(after["boot"] == before["boot"], f"{what}: same boot id {after['boot'][:8]}")
    check(after["counter"] > before["counter"] and after["uptime"] > before["uptime"],
          f"{what}: counter {before['counter']} -> {after['counter']}, "
          f"uptime {before['uptime']} -> {after['uptime']}")


def test_suspend_resume(uri, dom):
    """suspend()/resume() keeps the boot."""
    print("suspend/resume st-a")
    before = last_tick(uri, "st-a")
    timed("suspend", dom.suspend)
    check(dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED, "paused")
    time.sleep(2.5)
    paused = last_tick(uri, "st-a")
    check(paused["tick_count"] <= before["tick_count"] + 1, "no ticks while paused")
    timed("resume", dom.resume)
    after = guestctl("wait-boot", "--uri", uri, "st-a", "--timeout", "20")["tick"]
    continued(paused["last"], after, "resume")


def test_managed_save(uri, dom):
    """managedSave() + create() restores the running guest."""
    print("managedsave/start st-a")
    before = last_tick(uri, "st-a")
    timed("managedsave", dom.managedSave, 0)
    check(dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage(0),
          "shut off with a managed save image")
    timed("start from managedsave", dom.create)
    after = guestctl("wait-boot", "--uri", uri, "st-a", "--timeout", "20")["tick"]
    continued(before["last"], after, "restore")
    check(after["uptime"] - before["last"]["uptime"] < 5, "uptime continues where it stopped")
    check(len(last_tick(uri, "st-a")["boots"]) == 1, "still one boot in the console log")


def test_mark_and_shutdown(uri, dom):
    """vmops-mark reaches the disk; ACPI shutdown powers the guest off."""
    print("mark + ACPI shutdown st-b")
    text = f"selftest-{os.getpid()}"
    out = guestctl("exec", "--uri", uri, "st-b", "--json", "--", "vmops-mark", text)
    check(out["rc"] == 0 and text in out["output"], f"vmops-mark {text} ran in the guest")
    shown = guestctl("exec", "--uri", uri, "st-b", "--json", "--", "vmops-showmark")
    check(text in shown["output"], "vmops-showmark reads it back")
    record = guestctl("disk-record", "--uri", uri, "st-b")
    check(record["mark"] and record["mark"]["text"] == text, "marker is on the disk (host side, qemu-io -U)")
    check(record["tick"] is not None, f"tick record on the disk: counter {record['tick']['counter']}")
    acpi_before = last_tick(uri, "st-b")["acpi_shutdowns"]
    start = time.monotonic()
    dom.shutdown()
    wait_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, 60)
    TIMINGS["ACPI shutdown until shut off"] = round(time.monotonic() - start, 2)
    check(last_tick(uri, "st-b")["acpi_shutdowns"] == acpi_before + 1, "vmops-acpi-shutdown on the console")
    check(guestctl("disk-record", "--uri", uri, "st-b")["mark"]["text"] == text, "marker still there when off")


def test_reboot(uri, dom):
    """reboot() (ACPI, libvirt's default for QEMU) gives a new boot; wait-boot --not-boot sees it."""
    print("reboot st-c")
    before = last_tick(uri, dom.name())
    start = time.monotonic()
    dom.reboot(0)
    tick = guestctl("wait-boot", "--uri", uri, dom.name(), "--not-boot", before["last"]["boot"],
                    "--timeout", "60")["tick"]
    TIMINGS["reboot until first tick of the new boot"] = round(time.monotonic() - start, 2)
    after = last_tick(uri, dom.name())
    check(tick["boot"] != before["last"]["boot"] and after["boots"] == before["boots"] + [tick["boot"]],
          f"new boot {tick['boot'][:8]} after {before['last']['boot'][:8]}")
    disk = dom_tree_disk(dom)
    local = subprocess.run(GUESTCTL + ["host-path", "--uri", uri, disk], capture_output=True, text=True,
                           check=True).stdout.strip()
    check(Path(local).is_file(), f"host-path maps {disk} to {local}")


def dom_tree_disk(dom):
    """The source file of the domain's vda, as its host sees it."""
    tree = ET.fromstring(dom.XMLDesc(0))
    return tree.find("./devices/disk[@device='disk']/source").get("file")


def migrate(src, dst, name, dst_host, label):
    """Live-migrate name from src to dst and check the guest carried on."""
    print(f"migrate {name} {label}")
    src_uri, dst_uri = src.getURI(), dst_host["uri"]
    text = f"before-{label}"
    guestctl("exec", "--uri", src_uri, name, "--", "vmops-mark", text, parse=False)
    before = last_tick(src_uri, name)
    dom = src.lookupByName(name)
    timed(f"migration {label}", dom.migrateToURI3, dst_host["migration_uri"], {}, MIGRATE_FLAGS)
    try:
        src.lookupByName(name)
        check(False, "source definition removed")
    except libvirt.libvirtError:
        check(True, "source definition removed (UNDEFINE_SOURCE)")
    new = dst.lookupByName(name)
    check(new.isActive() and new.isPersistent(), "running and persistent on the destination")
    after = guestctl("wait-boot", "--uri", dst_uri, name, "--timeout", "20")["tick"]
    continued(before["last"], after, "migration")
    record = guestctl("disk-record", "--uri", dst_uri, name)
    check(record["mark"]["text"] == text, "disk content copied (marker on the destination disk)")
    return new


def main():
    """Run the checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the st-* guests defined")
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    sandbox = Path(os.environ.get("VMOPS_SANDBOX_DIR") or "/var/tmp/vmops-sandbox")
    hosts = json.loads((sandbox / "libvirt" / "hosts.json").read_text(encoding="utf-8"))["hosts"]
    if len(hosts) < 2:
        raise CheckFailed("needs 2 hosts (sandbox/libvirt/up --hosts 2)")
    h1, h2 = hosts[0], hosts[1]
    conn1, conn2 = libvirt.open(h1["uri"]), libvirt.open(h2["uri"])
    try:
        for name in GUESTS:
            for host in (h1, h2):
                guestctl("undefine", "--uri", host["uri"], name)
        print("boot st-a, st-b on h1 and st-c on h2")
        for name, index in GUESTS.items():
            report = guestctl("define", "--uri", hosts[index]["uri"], name, "--wait-boot")
            TIMINGS[f"boot {name} (start to first tick)"] = round(report["start_s"] + report["boot_s"], 2)
            check(report["state"] == "running", f"{name} on {hosts[index]['name']}: boot "
                  f"{report['first_tick']['boot'][:8]}, uptime {report['first_tick']['uptime']}")
        for name, index in GUESTS.items():
            TIMINGS[f"QEMU RSS MiB {name}"] = qemu_rss_mib(hosts[index], name)
        dom_a = conn1.lookupByName("st-a")
        test_suspend_resume(h1["uri"], dom_a)
        test_managed_save(h1["uri"], dom_a)
        test_mark_and_shutdown(h1["uri"], conn1.lookupByName("st-b"))
        test_reboot(h2["uri"], conn2.lookupByName("st-c"))
        migrate(conn1, conn2, "st-a", h2, "h1-to-h2")
        migrate(conn2, conn1, "st-a", h1, "h2-to-h1")
        check(len(last_tick(h1["uri"], "st-a")["boots"]) == 1, "st-a booted once through it all")
    finally:
        if not args.keep:
            for name in GUESTS:
                for host in (h1, h2):
                    guestctl("undefine", "--uri", host["uri"], name)
        conn1.close()
        conn2.close()
    print("timings (s):")
    for label, value in TIMINGS.items():
        print(f"  {label}: {value}")
    print("selftest: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as failure:
        print(f"selftest: FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
