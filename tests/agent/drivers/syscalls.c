/* What the container's seccomp filter lets through: each call with harmless arguments, printed as
   "name errno" (0: it went through). Built static by tests/agent/drivers/test_container_confinement.py. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *name, long rc) { printf("%s %d\n", name, rc < 0 ? errno : 0); }

int main(void) {
    char attr[128];
    memset(attr, 0, sizeof attr);
    show("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
    show("add_key", syscall(SYS_add_key, "user", "packyard", "x", 1, -3));
    show("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    show("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
    show("userfaultfd", syscall(SYS_userfaultfd, 0));
    show("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    show("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    show("getpid", syscall(SYS_getpid));
    return 0;
}
