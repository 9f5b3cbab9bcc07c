/*
 * log.c - the supervisor's log lines: formatted here, written by whoever
 * configured ps_sup_config.log (the CLI: text or JSON on stderr).  The
 * supervisor layer never prints by itself.
 */
#include "sup_internal.h"

#include <stdio.h>

void ps__sup_log(struct ps_sup *sup, enum ps_log_level level, const char *event, const char *fmt,
                 ...)
{
    char msg[1024];
    va_list ap;

    if (!sup->cfg->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sup->cfg->log(sup->cfg->log_ctx, level, event, msg);
}
