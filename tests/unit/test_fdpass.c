/*
 * test_fdpass.c - SCM_RIGHTS: exactly the expected descriptors arrive
 * (close-on-exec, the same open files), anything else is -EBADMSG and
 * leaves no descriptor behind (counted in /proc/self/fd).
 */
#include "ps_test.h"

#include "core.h"
#include "portshare.h"

#include <errno.h>
#include <sys/socket.h>

static int sv[2];

static int setup_stream(void **state)
{
    (void)state;
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

static int setup_seqpacket(void **state)
{
    (void)state;
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

static int teardown(void **state)
{
    (void)state;
    close(sv[0]);
    close(sv[1]);
    return 0;
}

/* Three different kinds of open file to send. */
static void open_three(int out[3])
{
    int p[2];

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    out[0] = p[0];
    out[1] = p[1];
    out[2] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(out[2] >= 0);
}

static void close_n(const int *fds, int n)
{
    int i;

    for (i = 0; i < n; i++)
        close(fds[i]);
}

static void test_exact_count(void **state)
{
    int sent[3], got[3] = {-1, -1, -1}, i;
    char buf[16];

    (void)state;
    open_three(sent);
    assert_int_equal(ps_fd_send(sv[0], sent, 3, "hello", 5), 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(ps_fd_recv(sv[1], got, 3, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    for (i = 0; i < 3; i++) {
        assert_int_not_equal(got[i], sent[i]);
        assert_true(same_file(got[i], sent[i])); /* in the order sent */
        assert_true(is_cloexec(got[i]));
    }
    /* they work: what goes into the received write end comes out of ours */
    assert_int_equal(write(got[1], "x", 1), 1);
    assert_int_equal(read(sent[0], buf, 1), 1);
    assert_int_equal(buf[0], 'x');
    close_n(sent, 3);
    close_n(got, 3);
}

static void test_no_descriptors(void **state)
{
    char buf[8];
    int fd = -1, before = count_open_fds();

    (void)state;
    assert_int_equal(ps_fd_send(sv[0], NULL, 0, "ping", 4), 0);
    assert_int_equal(ps_fd_recv(sv[1], NULL, 0, buf, sizeof(buf)), 4);
    /* one expected, none came */
    assert_int_equal(ps_fd_send(sv[0], NULL, 0, "ping", 4), 0);
    assert_int_equal(ps_fd_recv(sv[1], &fd, 1, buf, sizeof(buf)), -EBADMSG);
    assert_int_equal(count_open_fds(), before);
}

static void test_surplus_closes_everything(void **state)
{
    int sent[3], got[3] = {-1, -1, -1}, before;
    char buf[8];

    (void)state;
    open_three(sent);
    before = count_open_fds();
    assert_int_equal(ps_fd_send(sv[0], sent, 3, "m", 1), 0);
    assert_int_equal(ps_fd_recv(sv[1], got, 2, buf, sizeof(buf)), -EBADMSG);
    assert_int_equal(count_open_fds(), before);
    /* and fewer than expected, too */
    assert_int_equal(ps_fd_send(sv[0], sent, 1, "m", 1), 0);
    assert_int_equal(ps_fd_recv(sv[1], got, 3, buf, sizeof(buf)), -EBADMSG);
    assert_int_equal(count_open_fds(), before);
    /* unexpected ones are refused the same way */
    assert_int_equal(ps_fd_send(sv[0], sent, 2, "m", 1), 0);
    assert_int_equal(ps_fd_recv(sv[1], NULL, 0, buf, sizeof(buf)), -EBADMSG);
    assert_int_equal(count_open_fds(), before);
    close_n(sent, 3);
}

static void test_truncated_message(void **state)
{
    char big[100], small[10];
    int sent[3], got[2], before;

    (void)state;
    open_three(sent);
    memset(big, 'b', sizeof(big));
    before = count_open_fds();
    assert_int_equal(ps_fd_send(sv[0], sent, 2, big, sizeof(big)), 0);
    assert_int_equal(ps_fd_recv(sv[1], got, 2, small, sizeof(small)), -EBADMSG);
    assert_int_equal(count_open_fds(), before);
    /* the next message is read whole: the truncated one is gone */
    assert_int_equal(ps_fd_send(sv[0], sent, 2, "ok", 2), 0);
    assert_int_equal(ps_fd_recv(sv[1], got, 2, small, sizeof(small)), 2);
    close_n(got, 2);
    close_n(sent, 3);
}

static void test_the_maximum(void **state)
{
    int sent[PS_FDPASS_MAX], got[PS_FDPASS_MAX], i, before;
    char buf[4];

    (void)state;
    /* credentials ride along when the receiver asks for them: there must
     * still be room for all the descriptors */
    {
        int one = 1;
        assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
    }
    before = count_open_fds();
    sent[0] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (i = 1; i < PS_FDPASS_MAX; i++)
        sent[i] = sent[0];
    assert_int_equal(ps_fd_send(sv[0], sent, PS_FDPASS_MAX, "all", 3), 0);
    assert_int_equal(ps_fd_recv(sv[1], got, PS_FDPASS_MAX, buf, sizeof(buf)), 3);
    for (i = 0; i < PS_FDPASS_MAX; i++)
        assert_true(same_file(got[i], sent[0]));
    close_n(got, PS_FDPASS_MAX);
    close(sent[0]);
    assert_int_equal(count_open_fds(), before);
    assert_int_equal(ps_fd_send(sv[0], sent, PS_FDPASS_MAX + 1, "x", 1), -EINVAL);
}

static void test_end_of_file(void **state)
{
    char buf[4];
    int fd;

    (void)state;
    close(sv[0]);
    sv[0] = -1;
    assert_int_equal(ps_fd_recv(sv[1], &fd, 1, buf, sizeof(buf)), 0);
    assert_int_equal(ps_fd_recv(sv[1], NULL, 0, buf, sizeof(buf)), 0);
}

static void test_bad_arguments(void **state)
{
    int p[2], fd = -1;
    char buf[4];

    (void)state;
    assert_int_equal(ps_fd_send(sv[0], &fd, -1, "x", 1), -EINVAL);
    assert_int_equal(ps_fd_send(sv[0], NULL, 0, "x", 0), -EINVAL);
    assert_int_equal(ps_fd_send(sv[0], NULL, 0, NULL, 1), -EINVAL);
    assert_int_equal(ps_fd_recv(sv[1], &fd, -1, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(ps_fd_recv(sv[1], &fd, PS_FDPASS_MAX + 1, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(ps_fd_recv(sv[1], &fd, 1, buf, 0), -EINVAL);
    /* not a socket, and a descriptor that is not open */
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(ps_fd_send(p[1], NULL, 0, "x", 1), -ENOTSOCK);
    fd = p[0];
    close(p[0]);
    assert_int_equal(ps_fd_send(sv[0], &fd, 1, "x", 1), -EBADF);
    close(p[1]);
    /* nothing waiting on a non-blocking socket */
    assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(ps_fd_recv(sv[1], NULL, 0, buf, sizeof(buf)), -EAGAIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exact_count, setup_stream, teardown),
        cmocka_unit_test_setup_teardown(test_no_descriptors, setup_stream, teardown),
        cmocka_unit_test_setup_teardown(test_surplus_closes_everything, setup_stream, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_message, setup_seqpacket, teardown),
        cmocka_unit_test_setup_teardown(test_the_maximum, setup_stream, teardown),
        cmocka_unit_test_setup_teardown(test_end_of_file, setup_stream, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup_stream, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
