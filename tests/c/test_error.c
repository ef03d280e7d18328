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

TEST_MAIN(TEST_ENTRY(set_formats_and_returns_code), TEST_ENTRY(errno_maps_disk_full),
          TEST_ENTRY(strerror_names))
