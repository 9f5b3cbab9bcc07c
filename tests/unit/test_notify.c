/*
 * test_notify.c - the sd_notify protocol: path and abstract addresses,
 * credentials the kernel vouches for, refusal of messages without them.
 */
#include "ps_test.h"

#include "core.h"
#include "portshare.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    make_temp_dir(dir, sizeof(dir));
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_tree(dir);
    return 0;
}

static void path_in_dir(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static void test_path_round_trip(void **state)
{
    struct ps_notify_msg msg;
    char path[128];
    struct stat st;
    int fd;

    (void)state;
    path_in_dir(path, sizeof(path), "notify");
    fd = ps_notify_listen(path);
    assert_true(fd >= 0);
    assert_true(is_cloexec(fd));
    assert_int_not_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));

    assert_int_equal(ps_notify_recv(fd, &msg), -EAGAIN);
    assert_int_equal(ps_notify_to(path, "READY=1\nSTATUS=serving"), 1);
    memset(&msg, 0x55, sizeof(msg));
    assert_int_equal(ps_notify_recv(fd, &msg), 0);
    assert_string_equal(msg.text, "READY=1\nSTATUS=serving");
    assert_int_equal(msg.len, strlen("READY=1\nSTATUS=serving"));
    assert_int_equal(msg.pid, getpid());
    assert_int_equal(msg.uid, getuid());
    assert_int_equal(msg.gid, getgid());
    assert_int_equal(ps_notify_recv(fd, &msg), -EAGAIN);
    close(fd);

    /* the path left behind is a stale socket: listening again replaces it */
    fd = ps_notify_listen(path);
    assert_true(fd >= 0);
    close(fd);
}

static void send_from_child(void *arg)
{
    CHILD_CHECK(ps_notify("READY=1") == 1);
    (void)arg;
}

static void test_env_and_sender_pid(void **state)
{
    struct ps_notify_msg msg;
    char abstract[64];
    int fd, status;
    pid_t pid;

    (void)state;
    assert_int_equal(ps_notify("READY=1"), 0); /* NOTIFY_SOCKET unset */
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(ps_notify("READY=1"), 0);

    snprintf(abstract, sizeof(abstract), "@ps-unit-notify-%ld", (long)getpid());
    fd = ps_notify_listen(abstract);
    assert_true(fd >= 0);
    setenv("NOTIFY_SOCKET", abstract, 1);

    /* the credentials name the child that sent, not us */
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        send_from_child(NULL);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(status, 0);
    assert_int_equal(ps_notify_recv(fd, &msg), 0);
    assert_int_equal(msg.pid, pid);
    assert_string_equal(msg.text, "READY=1");

    assert_int_equal(ps_notify("STOPPING=1"), 1);
    assert_int_equal(ps_notify_recv(fd, &msg), 0);
    assert_int_equal(msg.pid, getpid());
    assert_string_equal(msg.text, "STOPPING=1");
    unsetenv("NOTIFY_SOCKET");
    close(fd);
}

static void test_without_credentials_refused(void **state)
{
    struct ps_notify_msg msg;
    int sp[2];

    (void)state;
    /* no SO_PASSCRED on the receiving end: the kernel attaches nothing */
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp), 0);
    assert_int_equal(send(sp[0], "READY=1", 7, 0), 7);
    assert_int_equal(ps_notify_recv(sp[1], &msg), -EBADMSG);
    /* with it turned on, the same message is accepted */
    {
        int one = 1;
        assert_int_equal(setsockopt(sp[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
    }
    assert_int_equal(send(sp[0], "READY=1", 7, 0), 7);
    assert_int_equal(ps_notify_recv(sp[1], &msg), 0);
    assert_int_equal(msg.pid, getpid());
    close(sp[0]);
    close(sp[1]);
}

static void test_truncated_refused(void **state)
{
    struct ps_notify_msg msg;
    char big[5000], path[128];
    int fd;

    (void)state;
    path_in_dir(path, sizeof(path), "big");
    fd = ps_notify_listen(path);
    assert_true(fd >= 0);
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ps_notify_to(path, big), 1);
    assert_int_equal(ps_notify_recv(fd, &msg), -EBADMSG);
    /* the largest message that fits is taken whole */
    big[sizeof(msg.text) - 1] = '\0';
    assert_int_equal(ps_notify_to(path, big), 1);
    assert_int_equal(ps_notify_recv(fd, &msg), 0);
    assert_int_equal(msg.len, sizeof(msg.text) - 1);
    close(fd);
}

/* Descriptors pushed at the receiver with a message are closed, not kept. */
static void test_descriptors_dropped(void **state)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 2)];
    } control;
    struct iovec iov = {.iov_base = "READY=1", .iov_len = 7};
    struct ps_notify_msg msg;
    struct sockaddr_un un;
    struct msghdr mh;
    struct cmsghdr *c;
    char path[128];
    int fd, s, p[2], before;

    (void)state;
    path_in_dir(path, sizeof(path), "fds");
    fd = ps_notify_listen(path);
    assert_true(fd >= 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path);
    memset(&mh, 0, sizeof(mh));
    memset(&control, 0, sizeof(control));
    mh.msg_name = &un;
    mh.msg_namelen = sizeof(un);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.buf;
    mh.msg_controllen = sizeof(control.buf);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * 2);
    memcpy(CMSG_DATA(c), p, sizeof(p));
    before = count_open_fds();
    assert_int_equal(sendmsg(s, &mh, 0), 7);
    assert_int_equal(ps_notify_recv(fd, &msg), 0);
    assert_string_equal(msg.text, "READY=1");
    assert_int_equal(count_open_fds(), before);
    close(p[0]);
    close(p[1]);
    close(s);
    close(fd);
}

static void test_errors(void **state)
{
    char path[128], file[128];
    struct stat st;

    (void)state;
    path_in_dir(path, sizeof(path), "nobody");
    assert_int_equal(ps_notify_to(path, "READY=1"), -ENOENT);
    assert_int_equal(ps_notify_to(path, ""), -EINVAL);
    assert_int_equal(ps_notify_to(path, NULL), -EINVAL);
    assert_int_equal(ps_notify_to("", "READY=1"), -EINVAL);
    assert_int_equal(ps_notify_to("@", "READY=1"), -EINVAL);
    assert_int_equal(ps_notify_listen(""), -EINVAL);

    /* a regular file in the way is never removed */
    path_in_dir(file, sizeof(file), "file");
    close(open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    assert_int_equal(ps_notify_listen(file), -EADDRINUSE);
    assert_int_equal(stat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

static void test_field(void **state)
{
    const char *text = "READY=1\nSTATUS=hello world\nMAINPID=42\nX=";
    char val[64], tiny[4];

    (void)state;
    assert_int_equal(ps_notify_field(text, "STATUS", val, sizeof(val)), 11);
    assert_string_equal(val, "hello world");
    assert_int_equal(ps_notify_field(text, "READY", val, sizeof(val)), 1);
    assert_string_equal(val, "1");
    assert_int_equal(ps_notify_field(text, "MAINPID", val, sizeof(val)), 2);
    assert_string_equal(val, "42");
    assert_int_equal(ps_notify_field(text, "X", val, sizeof(val)), 0);
    assert_string_equal(val, "");
    /* a prefix of a key, or a value, is not the key */
    assert_int_equal(ps_notify_field(text, "STAT", val, sizeof(val)), -ENOENT);
    assert_int_equal(ps_notify_field(text, "1", val, sizeof(val)), -ENOENT);
    assert_int_equal(ps_notify_field(text, "WATCHDOG", val, sizeof(val)), -ENOENT);
    assert_int_equal(ps_notify_field("", "READY", val, sizeof(val)), -ENOENT);
    /* a short buffer gets a cut, terminated value */
    assert_int_equal(ps_notify_field(text, "STATUS", tiny, sizeof(tiny)), 3);
    assert_string_equal(tiny, "hel");
    assert_int_equal(ps_notify_field(text, "STATUS", tiny, 0), -ENOBUFS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_round_trip),
        cmocka_unit_test(test_env_and_sender_pid),
        cmocka_unit_test(test_without_credentials_refused),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_descriptors_dropped),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_field),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
