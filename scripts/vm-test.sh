#!/usr/bin/env bash
# A vgpu client inside a QEMU/KVM virtual machine whose ivshmem device is its shared segment
# (VGPU_SHM_FILE=/sys/bus/pci/devices/<ivshmem>/resource2), against `vgpu serve --backend sim
# --shm-file` on this host over TCP (QEMU's user network: the host is 10.0.2.2 to the guest):
# the README's VM set-up, minus the GPU. The guest runs tests/c/shm_copy (copies of 1 B to
# 64 MiB both ways, checked byte for byte) through the device, then over TCP alone.
#
# Needs: apt-get install qemu-system-x86 linux-image-cloud-amd64 busybox-static
# Usage: scripts/vm-test.sh            (after scripts/dist.sh, or DIST=<dir> laid out by it; prints PASS or FAIL lines)
# The guest runs under QEMU's emulation unless VM_KVM=1 (nested KVM inside a VM may not
# boot this kernel at all: seen here).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=${DIST:-$ROOT/dist}
DIST=$(cd "$DIST" 2>/dev/null && pwd) || { echo "vm-test: no $DIST (run scripts/dist.sh first)"; exit 1; }
for need in qemu-system-x86_64 busybox cc cpio python3; do
  command -v $need >/dev/null || { echo "SKIP vm-test: $need not found (see the header)"; exit 0; }
done
[ -w /dev/shm ] || { echo "SKIP vm-test: no writable /dev/shm for the shared file"; exit 0; }
KERNEL=$(ls /boot/vmlinuz-*cloud-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$KERNEL" ] || { echo "SKIP vm-test: no Debian cloud kernel in /boot"; exit 0; }
KVER=${KERNEL#/boot/vmlinuz-}
[ -x "$DIST/bin/vgpu" ] || { echo "vm-test: no $DIST/bin/vgpu (run scripts/dist.sh first)"; exit 1; }

W=$(mktemp -d)
SHM=/dev/shm/vgpu-vmtest-$$.shm
trap 'kill ${SERVER:-} 2>/dev/null; rm -rf "$W" "$SHM"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=vmtest-$$-$RANDOM

# The guest's root: busybox, the shims and the test program with the libraries they load.
R=$W/root
mkdir -p $R/bin $R/mod $R/vgpu/lib $R/proc $R/sys $R/dev $R/tmp $R/etc
cp "$(command -v busybox)" $R/bin/busybox
cp -a "$DIST"/lib/. $R/vgpu/lib/
cc -O1 -o $R/shm_copy "$ROOT/tests/c/shm_copy.c" -L "$DIST/lib" -l:libcuda.so.1 -lpthread
for f in $R/shm_copy "$DIST"/lib/libcuda.so.1; do
  LD_LIBRARY_PATH=$DIST/lib ldd "$f" | grep -o '/[^ ]*' | grep -v "^$DIST" || true
done | sort -u | while read -r lib; do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
M=/lib/modules/$KVER/kernel
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  cp "$(find $M -name "$m.ko" | head -1)" $R/mod/
done
cat >$R/init <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm; mount -t tmpfs shm /dev/shm; mount -t tmpfs tmp /tmp
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod /mod/\$m.ko
done
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
for d in /sys/bus/pci/devices/*; do
  [ "\$(cat \$d/vendor)" = 0x1af4 ] && [ "\$(cat \$d/device)" = 0x1110 ] && DEV=\$d
done
echo "VMTEST ivshmem \$DEV, BAR 2 of \$(stat -c %s \$DEV/resource2) bytes"
export VGPU_SERVER=tcp://10.0.2.2:$PORT VGPU_TOKEN=$TOKEN VGPU_CONFIG=/nonexistent VGPU_TRACE=summary
export LD_LIBRARY_PATH=/vgpu/lib
VGPU_SHM_FILE=\$DEV/resource2 /shm_copy >/tmp/out 2>/tmp/err; echo "VMTEST file exit \$?"
grep -E 'copies ok|FAIL' /tmp/out | sed 's/^/VMTEST file: /'
grep -E 'shm_(htod|dtoh)|through rings|shared|cuMemcpy' /tmp/err | sed 's/^/VMTEST file: /'
/shm_copy >/tmp/out 2>/tmp/err; echo "VMTEST tcp exit \$?"
grep -E 'copies ok|FAIL' /tmp/out | sed 's/^/VMTEST tcp: /'
grep -E 'shm_(htod|dtoh)' /tmp/err | sed 's/^/VMTEST tcp: /'
echo "VMTEST done"
poweroff -f
EOF
chmod +x $R/init
(cd $R && find . | cpio -o -H newc 2>/dev/null | gzip -1) >$W/initrd.gz

truncate -s 256M $SHM
echo "$TOKEN" >$W/token && chmod 600 $W/token
VGPU_LOG=${VGPU_SERVER_LOG:-info} "$DIST/bin/vgpu" serve --backend sim --listen tcp://127.0.0.1:$PORT \
  --token-file $W/token --shm-file $SHM >$W/server.log 2>&1 &
SERVER=$!
accel=(-cpu max); [ -n "${VM_KVM:-}" ] && accel=(-enable-kvm -cpu host)
timeout 600 qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$KERNEL" -initrd $W/initrd.gz -append "console=ttyS0 panic=-1 quiet" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -object memory-backend-file,id=vgpu,share=on,mem-path=$SHM,size=256M -device ivshmem-plain,memdev=vgpu \
  </dev/null >$W/console.txt 2>&1 || true
grep VMTEST $W/console.txt || tail -20 $W/console.txt
grep -E 'shared segment|rings' $W/server.log | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/server: /' || true
ok=1
grep -q 'VMTEST file exit 0' $W/console.txt && grep -q 'VMTEST file: .*72 copies ok' $W/console.txt || ok=0
grep -qE 'VMTEST file: +shm_htod +[1-9]' $W/console.txt || ok=0
grep -q 'VMTEST tcp exit 0' $W/console.txt && grep -q 'VMTEST tcp: .*72 copies ok' $W/console.txt || ok=0
grep -q 'shared segment of 256 MiB' $W/server.log || ok=0
[ $ok = 1 ] && echo "PASS vm-test: copies through the VM's ivshmem device, and over TCP alone" || { echo "FAIL vm-test"; exit 1; }
