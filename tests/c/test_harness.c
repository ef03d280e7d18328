/* test_harness.c - the harness itself (test.h): SKIP and SKIP_OPTIN, as the
 * runner reports and counts them, with and without CI=true. Each check runs
 * this program again on one of the child_* cases and reads what it printed;
 * the child cases do nothing unless PRPC_HARNESS_CHILD is set. */
#include "common.h"
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

static char self[4096];
static char log_path[64];

TEST(child_env_skip)
{
    if (getenv("PRPC_HARNESS_CHILD") != NULL)
        SKIP("no frobnicator on this machine");
}

TEST(child_optin_skip)
{
    if (getenv("PRPC_HARNESS_CHILD") != NULL)
        SKIP_OPTIN("FROB_URI is not set");
}

/* Run `self name` with CI set to ci (NULL: unset) and the skip log at
 * log_path (emptied first); out gets its stdout. Returns its exit status. */
static int run_child(const char *name, const char *ci, char *out, size_t cap)
{
    char cmd[8192];
    size_t n;
    FILE *p;
    int st;
    if (self[0] == '\0') {
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (len <= 0)
            return -1;
        self[len] = '\0';
        snprintf(log_path, sizeof(log_path), "/tmp/prpc-harness-%d.log", (int)getpid());
    }
    unlink(log_path);
    snprintf(cmd, sizeof(cmd), "%s%s PRPC_HARNESS_CHILD=1 PRPC_TEST_SKIP_LOG=%s '%s' %s 2>&1",
             ci != NULL ? "CI=" : "env -u CI", ci != NULL ? ci : "", log_path, self, name);
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int log_lines(void)
{
    FILE *f = fopen(log_path, "r");
    int c, n = 0;
    if (f == NULL)
        return 0;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

TEST(skip_is_printed_counted_and_logged)
{
    char out[4096];
    CHECK_EQ_INT(run_child("child_env_skip", NULL, out, sizeof(out)), 0);
    CHECK(strstr(out, "skip child_env_skip: no frobnicator on this machine\n") != NULL);
    CHECK(strstr(out, "ok child_env_skip") == NULL);
    CHECK(strstr(out, ": 1 tests, 0 failed, 1 skipped\n") != NULL);
    CHECK_EQ_INT(log_lines(), 1);
    CHECK_EQ_INT(run_child("child_env_skip", "false", out, sizeof(out)), 0);
    CHECK(strstr(out, "1 skipped") != NULL);
}

TEST(skip_under_ci_fails_naming_why)
{
    char out[4096];
    CHECK_EQ_INT(run_child("child_env_skip", "true", out, sizeof(out)), 1);
    CHECK(strstr(out, "skipped under CI=true") != NULL);
    CHECK(strstr(out, "no frobnicator on this machine") != NULL);
    CHECK(strstr(out, "not ok child_env_skip\n") != NULL);
    CHECK(strstr(out, ": 1 tests, 1 failed, 0 skipped\n") != NULL);
    CHECK_EQ_INT(log_lines(), 0);
}

TEST(optin_skip_stays_a_skip_under_ci)
{
    char out[4096];
    CHECK_EQ_INT(run_child("child_optin_skip", "true", out, sizeof(out)), 0);
    CHECK(strstr(out, "skip child_optin_skip: FROB_URI is not set\n") != NULL);
    CHECK(strstr(out, ": 1 tests, 0 failed, 1 skipped\n") != NULL);
    CHECK_EQ_INT(log_lines(), 1);
    unlink(log_path);
}

TEST_MAIN(TEST_ENTRY(child_env_skip), TEST_ENTRY(child_optin_skip),
          TEST_ENTRY(skip_is_printed_counted_and_logged), TEST_ENTRY(skip_under_ci_fails_naming_why),
          TEST_ENTRY(optin_skip_stays_a_skip_under_ci))
