/*
 * buf.c - a growing text buffer: what the status, the metrics and the
 * connection server's answers are written into before they are sent.
 */
#include "sup_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ps__buf_printf(struct ps_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        /* grow: doubling keeps a long status O(length) */
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
}

void ps__buf_free(struct ps_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void ps__buf_json_string(struct ps_buf *o, const char *s)
{
    ps__buf_printf(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            ps__buf_printf(o, "\\%c", c);
        else if (c < 0x20)
            ps__buf_printf(o, "\\u%04x", c);
        else
            ps__buf_printf(o, "%c", c);
    }
    ps__buf_printf(o, "\"");
}
