#!/bin/sh
# rescue_ramdisk.sh SOURCE_INITRAMFS OUTPUT: the sandbox guest's initramfs, with its console on
# ttyS0 instead of /dev/console.  Nova's libvirt driver boots a rescue guest with its own kernel
# command line (console=tty0 console=ttyS0 console=hvc0; the image's os_command_line is not used),
# so neither /dev/console nor cttyhack's choice is the serial port there; this ramdisk makes the
# guest (and its rescue guest) print and run its shell on ttyS0 whatever the command line says.
set -eu
src=$1 out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
gzip -dc "$src" | cpio -id --quiet
sed -i 's|^exec </dev/console >/dev/console 2>&1$|exec </dev/ttyS0 >/dev/ttyS0 2>\&1|' init
sed -i 's|setsid cttyhack sh -l|setsid -c sh -l </dev/ttyS0 >/dev/ttyS0 2>\&1|' init
grep -q '^exec </dev/ttyS0 >/dev/ttyS0 2>&1$' init
grep -q 'setsid -c sh -l </dev/ttyS0 >/dev/ttyS0 2>&1$' init
find . | cpio -o -H newc --quiet | gzip -9 > "$out"
