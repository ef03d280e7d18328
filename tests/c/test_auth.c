/* test_auth.c - the network key and request signatures (csrc/auth.c).
 * PBKDF2 is slow on purpose, so the file derives exactly two keys, once each,
 * and every test shares them. Reference values were computed independently
 * with Python's hashlib.pbkdf2_hmac and hmac. */
#include "auth.h"
#include "hash.h"
#include "test.h"
#include "util.h"

#include <time.h>

#define PW1 "correct horse"
#define PW2 "correct horsf"
#define KEY1_HEX "8b3d9bf319814ac8dab3745916074f745e6989784cc488b2d1d2d4943a483876"
#define KEY2_HEX "2d006cbcc9851dc5077fb13fc489b223bc9dc3f4a3e584d499a51f52fe7307cc"

/* A request signed with KEY1: SHA-256 of the body {"fn":"x"} and the HMAC over
 * "POST\n/v1/calls?wait=1\n1700000000123\n<nonce>\n<body sha>". */
#define REQ_METHOD "POST"
#define REQ_PATH "/v1/calls?wait=1"
#define REQ_TIME 1700000000123LL
#define REQ_TIME_STR "1700000000123"
#define REQ_NONCE "00112233445566778899aabbccddeeff"
#define REQ_BODY "59329131a9345b14d2b44b18d179c1c878f697f38fdf01b23fade627fea64c9b"
#define REQ_SIG "a6ad8c79d46d0d68816b717d8eb7fd87ddf4d1d72e2adb6cda1fce2ea51ea23e"

#define MIN_MS (60 * 1000LL)

static uint8_t key1_[PRPC_AUTH_KEY_LEN], key2_[PRPC_AUTH_KEY_LEN];
static int keys_rc_ = 1; /* 1 = not derived yet, else derive's result */

static int keys(void)
{
    prpc_error_t err;
    if (keys_rc_ == 1) {
        keys_rc_ = prpc_auth_derive_key(PW1, strlen(PW1), key1_, &err);
        if (keys_rc_ == 0)
            keys_rc_ = prpc_auth_derive_key(PW2, strlen(PW2), key2_, &err);
        if (keys_rc_ != 0)
            fprintf(stderr, "  derive_key: %s\n", err.message);
    }
    return keys_rc_;
}

static void key_hex(const uint8_t *key, char out[65])
{
    prpc_hex_encode(key, PRPC_AUTH_KEY_LEN, out);
}

TEST(derive_key_matches_reference)
{
    char hex[65];
    CHECK_EQ_INT(keys(), 0);
    key_hex(key1_, hex);
    CHECK_EQ_STR(hex, KEY1_HEX);
    /* One letter of difference gives an unrelated key. */
    key_hex(key2_, hex);
    CHECK_EQ_STR(hex, KEY2_HEX);
}

TEST(derive_key_refuses_empty_password)
{
    uint8_t key[PRPC_AUTH_KEY_LEN];
    uint8_t untouched[PRPC_AUTH_KEY_LEN];
    prpc_error_t err;
    memset(key, 0xa5, sizeof(key));
    memset(untouched, 0xa5, sizeof(untouched));
    CHECK_EQ_INT(prpc_auth_derive_key("", 0, key, &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "the password is empty");
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    /* A non-empty string with len 0 is still an empty password. */
    CHECK_EQ_INT(prpc_auth_derive_key("secret", 0, key, &err), PRPC_EINVAL);
    CHECK_EQ_INT(prpc_auth_derive_key(NULL, 5, key, &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "the password is empty");
    CHECK_EQ_INT(prpc_auth_derive_key(NULL, 0, key, NULL), PRPC_EINVAL);
    CHECK(memcmp(key, untouched, sizeof(key)) == 0);
}

TEST(sign_matches_reference)
{
    char sig[PRPC_AUTH_SIG_HEX];
    char sig2[PRPC_AUTH_SIG_HEX];
    CHECK_EQ_INT(keys(), 0);
    prpc_auth_sign(key1_, REQ_METHOD, REQ_PATH, REQ_TIME, REQ_NONCE, REQ_BODY, sig);
    CHECK_EQ_STR(sig, REQ_SIG);
    CHECK_EQ_INT(strlen(sig), 64);
    /* Another key signs the same request differently. */
    prpc_auth_sign(key2_, REQ_METHOD, REQ_PATH, REQ_TIME, REQ_NONCE, REQ_BODY, sig2);
    CHECK(strcmp(sig, sig2) != 0);
}

TEST(verify_round_trip)
{
    char sig[PRPC_AUTH_SIG_HEX], nonce[PRPC_AUTH_NONCE_HEX], tstr[24];
    char body[65];
    uint8_t d[32];
    prpc_error_t err;
    int64_t now = prpc_now_ms();

    CHECK_EQ_INT(keys(), 0);
    CHECK_EQ_INT(prpc_sha256("", 0, d, &err), 0);
    prpc_hex_encode(d, 32, body);
    CHECK_EQ_INT(prpc_auth_nonce(nonce, &err), 0);
    prpc_auth_sign(key1_, "GET", "/v1/blobs/abc", now, nonce, body, sig);
    snprintf(tstr, sizeof(tstr), "%lld", (long long)now);
    CHECK_EQ_INT(prpc_auth_verify(key1_, "GET", "/v1/blobs/abc", tstr, nonce, body, sig, now,
                                  &err),
                 0);
    /* The reference request, checked by a receiver whose clock is 1 s ahead. */
    CHECK_EQ_INT(prpc_auth_verify(key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE,
                                  REQ_BODY, REQ_SIG, REQ_TIME + 1000, &err),
                 0);
    /* The window is inclusive: exactly five minutes either way passes. */
    CHECK_EQ_INT(prpc_auth_verify(key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE,
                                  REQ_BODY, REQ_SIG, REQ_TIME + PRPC_AUTH_WINDOW_MS, &err),
                 0);
    CHECK_EQ_INT(prpc_auth_verify(key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE,
                                  REQ_BODY, REQ_SIG, REQ_TIME - PRPC_AUTH_WINDOW_MS, NULL),
                 0);
}

/* The message must say why without handing out anything secret. */
static int leaks(const char *msg, const char *given_sig)
{
    char k1[65], k2[65];
    key_hex(key1_, k1);
    key_hex(key2_, k2);
    return strstr(msg, k1) != NULL || strstr(msg, k2) != NULL || strstr(msg, REQ_SIG) != NULL ||
           (given_sig != NULL && given_sig[0] != '\0' && strstr(msg, given_sig) != NULL) ||
           strstr(msg, PW1) != NULL;
}

struct refusal {
    const char *what;
    const uint8_t *key;
    const char *method, *path, *time_str, *nonce, *body, *sig;
    int64_t now;
    const char *reason;
};

TEST(verify_refuses_tampering)
{
    CHECK_EQ_INT(keys(), 0);
    const char *wrong = "wrong password or tampered request";
    const char *flipped = "a6ad8c79d46d0d68816b717d8eb7fd87ddf4d1d72e2adb6cda1fce2ea51ea23f";
    const char *upper = "A6AD8C79D46D0D68816B717D8EB7FD87DDF4D1D72E2ADB6CDA1FCE2EA51EA23E";
    const int64_t t = REQ_TIME;
    const struct refusal cases[] = {
        {"method", key1_, "GET", REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, REQ_SIG, t, wrong},
        {"path", key1_, REQ_METHOD, "/v1/calls?wait=2", REQ_TIME_STR, REQ_NONCE, REQ_BODY,
         REQ_SIG, t, wrong},
        {"query dropped", key1_, REQ_METHOD, "/v1/calls", REQ_TIME_STR, REQ_NONCE, REQ_BODY,
         REQ_SIG, t, wrong},
        {"body hash", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE,
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", REQ_SIG, t, wrong},
        {"nonce", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, "00112233445566778899aabbccddeefe",
         REQ_BODY, REQ_SIG, t, wrong},
        {"time value", key1_, REQ_METHOD, REQ_PATH, "1700000000124", REQ_NONCE, REQ_BODY, REQ_SIG,
         t, wrong},
        {"signature bit", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, flipped,
         t, wrong},
        {"signature case", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, upper,
         t, wrong},
        {"other key", key2_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, REQ_SIG, t,
         wrong},
        {"6 min old", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, REQ_SIG,
         t + 6 * MIN_MS, "timestamp outside the allowed window"},
        {"6 min ahead", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, REQ_SIG,
         t - 6 * MIN_MS, "timestamp outside the allowed window"},
        {"1 ms past window", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY,
         REQ_SIG, t + PRPC_AUTH_WINDOW_MS + 1, "timestamp outside the allowed window"},
        {"huge time", key1_, REQ_METHOD, REQ_PATH, "99999999999999999999999", REQ_NONCE, REQ_BODY,
         REQ_SIG, t, "timestamp outside the allowed window"},
        {"empty time", key1_, REQ_METHOD, REQ_PATH, "", REQ_NONCE, REQ_BODY, REQ_SIG, t,
         "malformed timestamp"},
        {"time with junk", key1_, REQ_METHOD, REQ_PATH, "1700000000123ms", REQ_NONCE, REQ_BODY,
         REQ_SIG, t, "malformed timestamp"},
        {"time not a number", key1_, REQ_METHOD, REQ_PATH, "soon", REQ_NONCE, REQ_BODY, REQ_SIG,
         t, "malformed timestamp"},
        {"time float", key1_, REQ_METHOD, REQ_PATH, "1700000000.123", REQ_NONCE, REQ_BODY,
         REQ_SIG, t, "malformed timestamp"},
        {"no time", key1_, REQ_METHOD, REQ_PATH, NULL, REQ_NONCE, REQ_BODY, REQ_SIG, t,
         "the request is not signed"},
        {"no nonce", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, NULL, REQ_BODY, REQ_SIG, t,
         "the request is not signed"},
        {"no signature", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, NULL, t,
         "the request is not signed"},
        {"short signature", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY,
         "a6ad8c79d46d0d68816b717d8eb7fd87ddf4d1d72e2adb6cda1fce2ea51ea23", t,
         "malformed signature"},
        {"long signature", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY,
         "a6ad8c79d46d0d68816b717d8eb7fd87ddf4d1d72e2adb6cda1fce2ea51ea23e0", t,
         "malformed signature"},
        {"empty signature", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, REQ_NONCE, REQ_BODY, "", t,
         "malformed signature"},
        {"short nonce", key1_, REQ_METHOD, REQ_PATH, REQ_TIME_STR, "00112233", REQ_BODY, REQ_SIG,
         t, "malformed signature"},
    };

    for (size_t i = 0; i < PRPC_ARRAY_LEN(cases); i++) {
        const struct refusal *c = &cases[i];
        prpc_error_t err;
        int rc;
        memset(&err, 0, sizeof(err));
        rc = prpc_auth_verify(c->key, c->method, c->path, c->time_str, c->nonce, c->body, c->sig,
                              c->now, &err);
        if (rc != PRPC_EAUTH || strstr(err.message, c->reason) == NULL ||
            strncmp(err.message, "authentication ", 15) != 0 || leaks(err.message, c->sig)) {
            fprintf(stderr, "  case \"%s\": rc %d, message \"%s\"\n", c->what, rc, err.message);
            CHECK(0);
        }
        CHECK_EQ_INT(err.code, PRPC_EAUTH);
    }
}

TEST(nonce_is_random_hex)
{
    char a[PRPC_AUTH_NONCE_HEX], b[PRPC_AUTH_NONCE_HEX];
    prpc_error_t err;
    memset(a, 'X', sizeof(a));
    memset(b, 'X', sizeof(b));
    CHECK_EQ_INT(prpc_auth_nonce(a, &err), 0);
    CHECK_EQ_INT(prpc_auth_nonce(b, NULL), 0);
    CHECK_EQ_INT(strlen(a), 32);
    CHECK_EQ_INT(strlen(b), 32);
    for (int i = 0; i < 32; i++) {
        CHECK((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
        CHECK((b[i] >= '0' && b[i] <= '9') || (b[i] >= 'a' && b[i] <= 'f'));
    }
    CHECK(strcmp(a, b) != 0);
}

TEST(now_ms_is_wall_clock)
{
    int64_t before = (int64_t)time(NULL) * 1000;
    int64_t now = prpc_now_ms();
    int64_t after = ((int64_t)time(NULL) + 1) * 1000;
    CHECK(now >= before && now <= after);
}

/* ---- the nonce cache (replay protection) ------------------------------ */

static void nonce_n(unsigned n, char out[33])
{
    snprintf(out, 33, "%08x%08x%08x%08x", n * 2654435761u, n, ~n, n ^ 0x5a5a5a5au);
}

TEST(nonce_cache_refuses_a_replay_inside_the_window)
{
    prpc_error_t err;
    prpc_nonce_cache_t *c = prpc_nonce_cache_new(1000, &err);
    char n1[33], n2[33];
    int64_t t = 1000000000;
    CHECK(c != NULL);
    nonce_n(1, n1);
    nonce_n(2, n2);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n1, t, t, &err), 0);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n2, t, t, &err), 0);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n1, t, t + 1000, &err), PRPC_EAUTH);
    CHECK(strstr(err.message, "replayed") != NULL);
    /* Past the window the request's timestamp is refused anyway; the nonce
     * may then be forgotten. */
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n1, t + PRPC_AUTH_WINDOW_MS + 1,
                                      t + PRPC_AUTH_WINDOW_MS + 1, &err),
                 0);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, "zz", t, t, &err), PRPC_EAUTH);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, NULL, t, t, &err), PRPC_EAUTH);
    prpc_nonce_cache_free(c);
    prpc_nonce_cache_free(NULL);
}

TEST(nonce_cache_grows_purges_and_caps)
{
    prpc_error_t err;
    prpc_nonce_cache_t *c = prpc_nonce_cache_new(5000, &err);
    char n[33];
    int64_t t = 1000000000;
    unsigned i;
    CHECK(c != NULL);
    for (i = 0; i < 5000; i++) {
        nonce_n(i, n);
        CHECK_EQ_INT(prpc_nonce_cache_add(c, n, t, t, &err), 0);
    }
    /* Every one of them is still refused as a replay after growth. */
    for (i = 0; i < 5000; i += 97) {
        nonce_n(i, n);
        CHECK_EQ_INT(prpc_nonce_cache_add(c, n, t, t, &err), PRPC_EAUTH);
    }
    /* Full of live nonces: refuse rather than forget one. */
    nonce_n(999999, n);
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n, t, t, &err), PRPC_ELIMIT);
    CHECK(strstr(err.message, "replay window") != NULL);
    /* Once they expire they are purged and new ones fit. */
    CHECK_EQ_INT(prpc_nonce_cache_add(c, n, t + PRPC_AUTH_WINDOW_MS + 10,
                                      t + PRPC_AUTH_WINDOW_MS + 10, &err),
                 0);
    CHECK(prpc_nonce_cache_size(c) < 100);
    prpc_nonce_cache_free(c);
}

TEST_MAIN(TEST_ENTRY(derive_key_matches_reference), TEST_ENTRY(derive_key_refuses_empty_password),
          TEST_ENTRY(sign_matches_reference), TEST_ENTRY(verify_round_trip),
          TEST_ENTRY(verify_refuses_tampering), TEST_ENTRY(nonce_is_random_hex),
          TEST_ENTRY(now_ms_is_wall_clock),
          TEST_ENTRY(nonce_cache_refuses_a_replay_inside_the_window),
          TEST_ENTRY(nonce_cache_grows_purges_and_caps))
