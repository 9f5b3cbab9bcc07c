/*
 * ps_test.h - helpers shared by the cmocka unit tests (header only, so that
 * every tests/unit/test_*.c stays one self-contained program).
 */
#ifndef PS_TEST_H
#define PS_TEST_H

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* How many descriptors this process has open: leaks show up as a difference. */
static inline int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream itself */
}

static inline int is_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);

    assert_true(flags >= 0);
    return (flags & FD_CLOEXEC) != 0;
}

/* Same open file (socket, pipe...) behind two descriptors? */
static inline int same_file(int a, int b)
{
    struct stat sa, sb;

    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
        return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/*
 * Inside a forked child cmocka's asserts must not be used (a failure would
 * longjmp back into the child's copy of the test runner).  CHILD_CHECK
 * reports the failing line and exits the child with status 1 instead.
 */
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__, __LINE__, #cond);         \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

/* Run fn(arg) in a forked child and assert that it exits with status 0. */
static inline void run_in_child(void (*fn)(void *), void *arg)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A fresh private directory for socket paths; removed by rm_tree(). */
static inline void make_temp_dir(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/ps-unit-XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static inline void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];

    if (!d)
        return;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

#endif
