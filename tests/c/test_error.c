/* test_error.c - the error record of common.h. */
#include "common.h"
#include "test.h"

#include <errno.h>

TEST(set_formats_and_returns_code)
{
    prpc_error_t err;
    CHECK_EQ_INT(prpc_error_set(&err, PRPC_EINVAL, "bad %s %d", "x", 3), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "bad x 3");
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK_EQ_INT(prpc_error_set(NULL, PRPC_EIO, "ignored"), PRPC_EIO);
}

TEST(errno_maps_disk_full)
{
    prpc_error_t err;
    CHECK_EQ_INT(prpc_error_errno(&err, ENOSPC, "writing %s", "blob"), PRPC_ENOSPC);
    CHECK(strstr(err.message, "writing blob: ") == err.message);
    CHECK_EQ_INT(prpc_error_errno(&err, ENOENT, "open"), PRPC_ENOTFOUND);
    CHECK_EQ_INT(prpc_error_errno(&err, EACCES, "open"), PRPC_EIO);
}

TEST(strerror_names)
{
    CHECK_EQ_STR(prpc_strerror(PRPC_ENOSPC), "ENOSPC");
    CHECK_EQ_STR(prpc_strerror(PRPC_ELIMIT), "ELIMIT");
    CHECK_EQ_STR(prpc_strerror(-999), "EUNKNOWN");
    CHECK_EQ_STR(prpc_strerror(1), "EUNKNOWN");
}

/* Every row of error_map.h: a unique name and value, found again by its name,
 * a status that maps back to a code of the same status, and exactly one
 * primary code per status. */
TEST(table_maps_both_ways)
{
    size_t n = 0;
    const prpc_error_info_t *t = prpc_error_table(&n);
    CHECK(n >= 16);
    for (size_t i = 0; i < n; i++) {
        int back, primaries = 0;
        CHECK(t[i].code < 0);
        CHECK_EQ_STR(prpc_strerror(t[i].code), t[i].name);
        CHECK_EQ_INT(prpc_error_code_by_name(t[i].name), t[i].code);
        CHECK_EQ_INT(prpc_error_http_status(t[i].code), t[i].http_status);
        CHECK(t[i].py_class[0] != '\0' && t[i].message[0] != '\0');
        back = prpc_error_from_http_status(t[i].http_status);
        for (size_t j = 0; j < n; j++) {
            if (j != i) {
                CHECK(t[j].code != t[i].code);
                CHECK(strcmp(t[j].name, t[i].name) != 0);
                CHECK(strcmp(t[j].py_class, t[i].py_class) != 0);
            }
            primaries += t[j].primary && t[j].http_status == t[i].http_status;
        }
        CHECK(primaries <= 1);
        if (primaries == 0)
            CHECK_EQ_INT(back, PRPC_EPROTO);
        else
            CHECK_EQ_INT(prpc_error_http_status(back), t[i].http_status);
        if (t[i].primary)
            CHECK_EQ_INT(back, t[i].code);
    }
}

TEST(http_status_edges)
{
    CHECK_EQ_INT(prpc_error_http_status(PRPC_EINVAL), 400);
    CHECK_EQ_INT(prpc_error_http_status(PRPC_ECORRUPT), 400);
    CHECK_EQ_INT(prpc_error_http_status(PRPC_ELIMIT), 413);
    CHECK_EQ_INT(prpc_error_http_status(-999), 500);
    CHECK_EQ_INT(prpc_error_from_http_status(400), PRPC_EINVAL);
    CHECK_EQ_INT(prpc_error_from_http_status(403), PRPC_EAUTH);
    CHECK_EQ_INT(prpc_error_from_http_status(409), PRPC_ESTATE);
    CHECK_EQ_INT(prpc_error_from_http_status(418), PRPC_EPROTO);
    CHECK_EQ_INT(prpc_error_code_by_name("ENOPE"), 0);
    CHECK_EQ_INT(prpc_error_code_by_name(NULL), 0);
}

TEST_MAIN(TEST_ENTRY(set_formats_and_returns_code), TEST_ENTRY(errno_maps_disk_full),
          TEST_ENTRY(strerror_names), TEST_ENTRY(table_maps_both_ways),
          TEST_ENTRY(http_status_edges))
