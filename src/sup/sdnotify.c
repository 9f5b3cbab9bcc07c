/*
 * sdnotify.c - what the supervisor tells systemd about itself (READY=1,
 * RELOADING=1, STOPPING=1, STATUS=), when systemd started it with a
 * NOTIFY_SOCKET.  The machine reaches it through its seam (sup->sys->notify).
 */
#include "sup_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void ps__sup_notify_systemd(struct ps_sup *sup, const char *state)
{
    char buf[256];

    if (!sup->systemd_notify[0])
        return;
    if (!strcmp(state, "RELOADING=1")) {
        /* Type=notify-reload wants the time the reload started */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ull +
                     (unsigned long long)ts.tv_nsec / 1000);
        state = buf;
    }
    ps_notify_to(sup->systemd_notify, state);
}
