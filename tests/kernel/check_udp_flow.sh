#!/bin/bash
# check_udp_flow.sh BUILD_DIR - run test_udp_flow (the UDP flow program
# against a real kernel) on Debian 12's own kernel, not this machine's:
# downloads the current linux-image-6.1.*-amd64 package from Debian's
# archive (apt-get download), boots it in qemu (TCG: no KVM needed) with an
# initramfs holding the test, its shared libraries and a small /init, and
# prints the test's output.  Exit status: the test's (0: the program loaded
# and behaved on 6.1).  Not part of ctest: it downloads ~70 MB and installs
# qemu-system-x86 and cpio when missing (as root).  About 10 s of boot+test.
set -euo pipefail
build=$(cd "${1:?usage: check_udp_flow.sh BUILD_DIR}" && pwd)
test -x "$build/tests/test_udp_flow" || { echo "check_udp_flow.sh: no $build/tests/test_udp_flow (build it first)" >&2; exit 2; }
for p in qemu-system-x86 cpio; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        apt-get install -y --no-install-recommends "$p" >/dev/null
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
chmod 755 "$work" # apt-get download runs as _apt where it can
image=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-6\.1[^ ]*\)/\1/p' | head -1)
apt-get download "$image" >/dev/null 2>&1
dpkg -x "$image"_*.deb kernel
cat > init.c <<'EOF'
/* /init: mount what libbpf reads, bring lo up, run the test, power off */
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    struct ifreq ifr;
    struct utsname u;
    int fd, st = -1;
    pid_t p;

    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    uname(&u);
    printf("kernel %s %s\n", u.release, u.version);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    ioctl(fd, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    ioctl(fd, SIOCSIFFLAGS, &ifr);
    sleep(1); /* ::1 is added to lo once it is up */
    fflush(stdout);
    p = fork();
    if (p == 0) {
        execl("/test_udp_flow", "test_udp_flow", (char *)NULL);
        _exit(127);
    }
    waitpid(p, &st, 0);
    printf("CHECK test_udp_flow exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128);
    fflush(stdout);
    reboot(RB_POWER_OFF);
    return 0;
}
EOF
gcc -O1 -static -o init init.c
mkdir -p root/proc root/sys root/dev root/tmp
cp init "$build/tests/test_udp_flow" root/
for lib in $(ldd root/test_udp_flow | grep -o '/[^ ]*'); do
    mkdir -p "root$(dirname "$lib")"
    cp -L "$lib" "root$lib"
done
(cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1 >../initrd.gz)
timeout 600 qemu-system-x86_64 -accel tcg -m 512 -smp 2 -nographic -no-reboot \
    -kernel kernel/boot/vmlinuz-* -initrd initrd.gz \
    -append "console=ttyS0 panic=-1 quiet" >vm.log 2>&1 || true
tr -d '\r' <vm.log | sed -n 's/.*\(kernel [0-9]\)/\1/; /^kernel [0-9]/,$p'
rc=$(sed -n 's/.*CHECK test_udp_flow exit \([0-9]*\).*/\1/p' vm.log)
exit "${rc:-1}"
