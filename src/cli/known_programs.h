/*
 * known_programs.h - the drain signal of well-known servers, chosen by the
 * program's name when --drain-signal is not given (known_programs.c).
 */
#ifndef PS_KNOWN_PROGRAMS_H
#define PS_KNOWN_PROGRAMS_H

struct known_program {
    const char *name;     /* base name of the program ("php-fpm" also matches "php-fpm8.2") */
    int drain_signal;     /* what drains it gracefully */
    const char *sig_name; /* "QUIT", for the log */
    const char *why;      /* for the log: what that signal is to the program */
};

/* The known program that argv (PROGRAM ARGS..., NULL-terminated) runs,
 * looking through interpreters and launchers (perl, ruby, python3, node,
 * env, bundle exec...), or NULL.  O(argc x rows). */
const struct known_program *ps_cli_known_program(char *const *argv);

#endif
