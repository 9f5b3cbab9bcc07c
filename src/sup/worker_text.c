/*
 * worker_text.c - what a worker says about itself (STATUS=,
 * X_PORTSHARE_STATS=, X_PORTSHARE_CLOSES= on NOTIFY_SOCKET), made safe to
 * show: a worker is not trusted to send printable text or well-formed
 * counters, and what it sends ends up on an operator's terminal (status),
 * in JSON and in Prometheus text.
 */
#include "sup_internal.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of the well-formed UTF-8 sequence at s (1-4), or 0.  No overlong
 * forms, no surrogates, nothing above U+10FFFF (RFC 3629). */
static int utf8_len(const unsigned char *s)
{
    int n, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4;
    else
        return 0;
    for (i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

void ps__text_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p) {
        int n = utf8_len(p);
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f))) {
            *p++ = '?'; /* a control byte (an escape sequence) or broken UTF-8 */
            continue;
        }
        if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) { /* C1 controls */
            p[0] = p[1] = '?';
        }
        p += n;
    }
}

int ps__stats_next(const char **text, char *name, size_t cap, unsigned long long *v)
{
    const char *p = *text;

    for (;;) {
        size_t n, d;
        p += strspn(p, " ");
        if (!*p)
            break;
        n = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
        d = p[n] == '=' ? strspn(p + n + 1, "0123456789") : 0;
        /* NAME=DIGITS and nothing else up to the next space; 19 digits
         * at most, so that it fits (no sign, no wrap) */
        if (n > 0 && n < cap && d > 0 && d <= 19 && (p[n + 1 + d] == ' ' || !p[n + 1 + d])) {
            memcpy(name, p, n);
            name[n] = '\0';
            *v = strtoull(p + n + 1, NULL, 10);
            *text = p + n + 1 + d;
            return 1;
        }
        p += strcspn(p, " "); /* malformed: skipped */
    }
    *text = p;
    return 0;
}
