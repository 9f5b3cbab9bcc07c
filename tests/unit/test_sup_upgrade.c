/*
 * The upgrade state's format: the field tables upgrade.c writes and reads
 * are held to the format's name.  A table changed (a field added, renamed,
 * retyped, a string resized, an enum grown) without a new name would make
 * an in-place upgrade between two builds fail after the exec, with no old
 * supervisor left: the name is what "portshare upgrade" compares first.
 */
#include "ps_test.h"
#include "sup_internal.h"
#include "supervisor.h"

#include <stdio.h>
#include <string.h>

static void test_tables_match_the_format(void **state)
{
    uint32_t now = ps__upgrade_tables_hash();

    (void)state;
    if (now != PS__UPGRADE_TABLES_HASH)
        fail_msg("the upgrade state's field tables changed (fingerprint 0x%08x, recorded "
                 "0x%08x for '%s'): give STATE_MAGIC in src/sup/upgrade.c a new number and "
                 "set PS__UPGRADE_TABLES_HASH in src/sup/sup_internal.h to 0x%08xu",
                 (unsigned)now, (unsigned)PS__UPGRADE_TABLES_HASH, ps_sup_upgrade_state_format(),
                 (unsigned)now);
}

static void test_format_name(void **state)
{
    const char *name = ps_sup_upgrade_state_format();

    (void)state;
    assert_non_null(name);
    assert_int_equal(strncmp(name, "portshare-upgrade-", 18), 0);
    assert_null(strpbrk(name, " \n")); /* one word: it is compared as printed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_match_the_format),
        cmocka_unit_test(test_format_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
