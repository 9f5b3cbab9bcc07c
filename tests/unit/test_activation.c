/*
 * test_activation.c - both sides of the LISTEN_FDS hand-off, each case in a
 * forked child so that descriptors 3.. and the environment are its own.
 */
#include "ps_test.h"

#include "core.h"
#include "portshare.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int tcp_listener(void)
{
    struct ps_spec spec;

    CHILD_CHECK(ps_spec_parse("tcp://127.0.0.1:0", &spec, NULL, 0) == 0);
    return ps_listen_open(&spec, 0);
}

static int env_is(const char *name, const char *want)
{
    const char *v = getenv(name);

    if (!want)
        return v == NULL;
    return v && !strcmp(v, want);
}

static void clear_env(void)
{
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
}

/* Set the variables the way a parent would, LISTEN_PID = pid. */
static void set_env(long pid, const char *fds, const char *names)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%ld", pid);
    setenv("LISTEN_PID", buf, 1);
    setenv("LISTEN_FDS", fds, 1);
    if (names)
        setenv("LISTEN_FDNAMES", names, 1);
    else
        unsetenv("LISTEN_FDNAMES");
}

/* ---- giving side ---------------------------------------------------------- */

static void child_apply_and_receive(void *arg)
{
    const char *const names[] = {"web", "admin"};
    char pid[32], **got = NULL;
    int a, b, fds[2], i;

    (void)arg;
    a = tcp_listener();
    b = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHILD_CHECK(a >= 0 && b >= 0);
    /* keep copies far away to compare identities after the move */
    fds[0] = fcntl(a, F_DUPFD_CLOEXEC, 100);
    fds[1] = fcntl(b, F_DUPFD_CLOEXEC, 101);
    CHILD_CHECK(ps_activation_apply(fds, 2, names) == 0);
    CHILD_CHECK(same_file(3, fds[0]) && same_file(4, fds[1]));
    /* exec must keep them: close-on-exec is clear at 3 and 4 */
    CHILD_CHECK(!(fcntl(3, F_GETFD) & FD_CLOEXEC));
    CHILD_CHECK(!(fcntl(4, F_GETFD) & FD_CLOEXEC));
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    CHILD_CHECK(env_is("LISTEN_FDS", "2"));
    CHILD_CHECK(env_is("LISTEN_PID", pid));
    CHILD_CHECK(env_is("LISTEN_FDNAMES", "web:admin"));

    /* and our own receiving side takes them back */
    CHILD_CHECK(ps_listen_fds(1, &got) == 2);
    CHILD_CHECK(got && !strcmp(got[0], "web") && !strcmp(got[1], "admin") && !got[2]);
    ps_listen_names_free(got);
    for (i = 3; i < 5; i++)
        CHILD_CHECK(fcntl(i, F_GETFD) & FD_CLOEXEC);
    CHILD_CHECK(ps_is_socket(3, AF_INET, SOCK_STREAM, 1) == 1);
    CHILD_CHECK(ps_is_socket(4, AF_UNIX, SOCK_DGRAM, -1) == 1);
    CHILD_CHECK(env_is("LISTEN_FDS", NULL) && env_is("LISTEN_PID", NULL) &&
                env_is("LISTEN_FDNAMES", NULL));
}

static void test_apply_then_receive(void **state)
{
    (void)state;
    run_in_child(child_apply_and_receive, NULL);
}

/* The sources already sit in the target range, in the wrong order. */
static void child_apply_swapped(void *arg)
{
    int a, b, keep_a, keep_b, fds[2], before;

    (void)arg;
    /* start away from 3 and 4 so that placing them cannot close one */
    a = fcntl(tcp_listener(), F_DUPFD_CLOEXEC, 50);
    b = fcntl(tcp_listener(), F_DUPFD_CLOEXEC, 60);
    keep_a = fcntl(a, F_DUPFD_CLOEXEC, 100);
    keep_b = fcntl(b, F_DUPFD_CLOEXEC, 101);
    CHILD_CHECK(dup3(b, 3, O_CLOEXEC) == 3 && dup3(a, 4, O_CLOEXEC) == 4);
    close(a);
    close(b);
    fds[0] = 4; /* A must end up at 3 */
    fds[1] = 3; /* B must end up at 4 */
    before = count_open_fds();
    CHILD_CHECK(ps_activation_apply(fds, 2, NULL) == 0);
    CHILD_CHECK(same_file(3, keep_a));
    CHILD_CHECK(same_file(4, keep_b));
    CHILD_CHECK(!(fcntl(3, F_GETFD) & FD_CLOEXEC) && !(fcntl(4, F_GETFD) & FD_CLOEXEC));
    CHILD_CHECK(env_is("LISTEN_FDS", "2"));
    CHILD_CHECK(env_is("LISTEN_FDNAMES", NULL)); /* no names given */
    /* nothing else was left open: the lifted copies are gone */
    CHILD_CHECK(count_open_fds() == before);
}

static void test_apply_swapped_sources(void **state)
{
    (void)state;
    run_in_child(child_apply_swapped, NULL);
}

static void child_apply_names(void *arg)
{
    const char *const bad[] = {"ok", "not:ok"};
    const char *const sparse[] = {"", NULL, "x"};
    int fds[3], before;

    (void)arg;
    fds[0] = fds[1] = fds[2] = tcp_listener();
    setenv("LISTEN_FDNAMES", "stale", 1);
    CHILD_CHECK(ps_activation_apply(fds, 3, sparse) == 0);
    CHILD_CHECK(env_is("LISTEN_FDNAMES", "unknown:unknown:x"));
    CHILD_CHECK(env_is("LISTEN_FDS", "3"));
    /* a refused name changes nothing: no descriptor, no variable */
    before = count_open_fds();
    unsetenv("LISTEN_FDS");
    CHILD_CHECK(ps_activation_apply(fds, 2, bad) == -EINVAL);
    CHILD_CHECK(count_open_fds() == before);
    CHILD_CHECK(env_is("LISTEN_FDS", NULL));
    CHILD_CHECK(ps_activation_apply(fds, -1, NULL) == -EINVAL);
    CHILD_CHECK(ps_activation_apply(fds, PS_FDPASS_MAX + 1, NULL) == -EINVAL);
    /* a closed source is an error, and the copies made so far are closed */
    fds[1] = 200;
    before = count_open_fds();
    CHILD_CHECK(ps_activation_apply(fds, 2, NULL) == -EBADF);
    CHILD_CHECK(count_open_fds() == before);
    /* zero descriptors is a valid hand-off */
    CHILD_CHECK(ps_activation_apply(fds, 0, NULL) == 0);
    CHILD_CHECK(env_is("LISTEN_FDS", "0"));
}

static void test_apply_names_and_errors(void **state)
{
    (void)state;
    run_in_child(child_apply_names, NULL);
}

/* ---- receiving side -------------------------------------------------------- */

/* Put n TCP listeners at 3..3+n-1 (not close-on-exec, as after an exec). */
static void place_listeners(int n)
{
    int i, fd;

    for (i = 0; i < n; i++) {
        fd = tcp_listener();
        CHILD_CHECK(fd >= 0);
        if (fd != 3 + i) {
            CHILD_CHECK(dup2(fd, 3 + i) == 3 + i);
            close(fd);
        } else {
            CHILD_CHECK(fcntl(fd, F_SETFD, 0) == 0);
        }
    }
    close(3 + n); /* whatever the test runner left there */
}

static void child_receive_checks(void *arg)
{
    char **names = (char **)1;

    (void)arg;
    place_listeners(3);

    clear_env();
    CHILD_CHECK(ps_listen_fds(0, &names) == 0 && names == NULL);

    /* meant for another process: 0, and the variables stay unless asked */
    set_env((long)getppid(), "3", "a:b:c");
    CHILD_CHECK(ps_listen_fds(0, NULL) == 0);
    CHILD_CHECK(env_is("LISTEN_FDS", "3"));
    CHILD_CHECK(ps_listen_fds(1, NULL) == 0);
    CHILD_CHECK(env_is("LISTEN_FDS", NULL) && env_is("LISTEN_PID", NULL) &&
                env_is("LISTEN_FDNAMES", NULL));
    /* and the descriptors were not touched */
    CHILD_CHECK(!(fcntl(3, F_GETFD) & FD_CLOEXEC));

    /* malformed variables */
    set_env((long)getpid(), "x", NULL);
    CHILD_CHECK(ps_listen_fds(0, NULL) == -EINVAL);
    set_env((long)getpid(), "-1", NULL);
    CHILD_CHECK(ps_listen_fds(0, NULL) == -EINVAL);
    set_env((long)getpid(), " 1", NULL);
    CHILD_CHECK(ps_listen_fds(0, NULL) == -EINVAL);
    set_env((long)getpid(), "254", NULL);
    CHILD_CHECK(ps_listen_fds(0, NULL) == -EINVAL);
    setenv("LISTEN_PID", "12ab", 1);
    setenv("LISTEN_FDS", "1", 1);
    CHILD_CHECK(ps_listen_fds(0, NULL) == -EINVAL);
    setenv("LISTEN_PID", "0", 1);
    CHILD_CHECK(ps_listen_fds(1, NULL) == -EINVAL);
    CHILD_CHECK(env_is("LISTEN_FDS", NULL)); /* cleared even on error */

    /* LISTEN_FDS=0 is valid and means nothing was passed */
    set_env((long)getpid(), "0", NULL);
    CHILD_CHECK(ps_listen_fds(1, NULL) == 0);

    /* a promised descriptor that is not open */
    set_env((long)getpid(), "4", NULL);
    CHILD_CHECK(fcntl(6, F_GETFD) < 0);
    CHILD_CHECK(ps_listen_fds(1, NULL) == -EBADF);
}

static void test_receive_validation(void **state)
{
    (void)state;
    run_in_child(child_receive_checks, NULL);
}

static void child_receive_names(void *arg)
{
    char **names = NULL;

    (void)arg;
    place_listeners(3);

    set_env((long)getpid(), "3", "a::c");
    CHILD_CHECK(ps_listen_fds(0, &names) == 3);
    CHILD_CHECK(!strcmp(names[0], "a") && !strcmp(names[1], "unknown") && !strcmp(names[2], "c") &&
                names[3] == NULL);
    ps_listen_names_free(names);

    /* fewer names than descriptors, and surplus names are ignored */
    set_env((long)getpid(), "3", "only");
    CHILD_CHECK(ps_listen_fds(0, &names) == 3);
    CHILD_CHECK(!strcmp(names[0], "only") && !strcmp(names[1], "unknown") &&
                !strcmp(names[2], "unknown") && names[3] == NULL);
    ps_listen_names_free(names);
    set_env((long)getpid(), "2", "p:q:r");
    CHILD_CHECK(ps_listen_fds(0, &names) == 2);
    CHILD_CHECK(!strcmp(names[0], "p") && !strcmp(names[1], "q") && names[2] == NULL);
    ps_listen_names_free(names);

    /* no LISTEN_FDNAMES at all: every one is "unknown", like systemd */
    set_env((long)getpid(), "3", NULL);
    CHILD_CHECK(ps_listen_fds(1, &names) == 3);
    CHILD_CHECK(!strcmp(names[0], "unknown") && !strcmp(names[2], "unknown"));
    ps_listen_names_free(names);
    ps_listen_names_free(NULL);

    /* every received descriptor is now close-on-exec */
    CHILD_CHECK((fcntl(3, F_GETFD) & FD_CLOEXEC) && (fcntl(4, F_GETFD) & FD_CLOEXEC) &&
                (fcntl(5, F_GETFD) & FD_CLOEXEC));
}

static void test_receive_names(void **state)
{
    (void)state;
    run_in_child(child_receive_names, NULL);
}

/* ---- ps_is_socket ---------------------------------------------------------- */

static void test_is_socket(void **state)
{
    int l, p[2], sp[2], udp, file, closed;

    (void)state;
    l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    assert_int_equal(listen(l, 1), 0); /* autobinds an ephemeral port */
    assert_int_equal(ps_is_socket(l, AF_INET, SOCK_STREAM, 1), 1);
    assert_int_equal(ps_is_socket(l, AF_UNSPEC, 0, -1), 1);
    assert_int_equal(ps_is_socket(l, AF_INET6, SOCK_STREAM, 1), 0);
    assert_int_equal(ps_is_socket(l, AF_INET, SOCK_DGRAM, -1), 0);
    assert_int_equal(ps_is_socket(l, AF_INET, SOCK_STREAM, 0), 0);

    udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(ps_is_socket(udp, AF_INET, SOCK_DGRAM, 0), 1);
    assert_int_equal(ps_is_socket(udp, AF_INET, SOCK_DGRAM, 1), 0);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    assert_int_equal(ps_is_socket(sp[0], AF_UNIX, SOCK_STREAM, 0), 1);

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(ps_is_socket(p[0], AF_UNSPEC, 0, -1), 0);
    file = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    assert_int_equal(ps_is_socket(file, AF_UNSPEC, 0, -1), 0);

    closed = dup(file);
    close(closed);
    assert_int_equal(ps_is_socket(closed, AF_UNSPEC, 0, -1), -EBADF);
    assert_int_equal(ps_is_socket(-1, AF_UNSPEC, 0, -1), -EBADF);

    close(l);
    close(udp);
    close(sp[0]);
    close(sp[1]);
    close(p[0]);
    close(p[1]);
    close(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_then_receive),     cmocka_unit_test(test_apply_swapped_sources),
        cmocka_unit_test(test_apply_names_and_errors), cmocka_unit_test(test_receive_validation),
        cmocka_unit_test(test_receive_names),          cmocka_unit_test(test_is_socket),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
