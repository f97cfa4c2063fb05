/* test_jwt.c: unit tests for JWT verification (core/kr_jwt.c).
 *
 * Keys are generated at test time with OpenSSL (RSA 2048, EC P-256/P-384/P-521) and tokens
 * are signed by a small test-only signer (jwt_sign.h) on the same OpenSSL APIs, so nothing in
 * the tests is a fixed token that could go stale. Every verification reads the token from an
 * exact-size heap copy, so ASan catches a read past its end. The clock is pinned with
 * opts.now_s.
 */
#include "kr_jwt.h"

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kr_test.h"
#include "jwt_sign.h"

#define NOW 1700000000

static const char secret64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* ---- test-only signer (base64url and signatures: jwt_sign.h) ------------------------------ */

/* base64url(header) "." base64url(payload), malloc'd with room for a signature. */
static char *signing_input(const char *header, const char *payload)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *t = malloc(2 * (hl + pl) + 1400);
    size_t n = b64url_enc((const unsigned char *)header, hl, t);
    t[n++] = '.';
    b64url_enc((const unsigned char *)payload, pl, t + n);
    return t;
}

/* A complete token with the given signature bytes. */
static char *token_with_sig(const char *header, const char *payload, const unsigned char *sig,
                            size_t slen)
{
    char *t = signing_input(header, payload);
    size_t n = strlen(t);
    t[n++] = '.';
    b64url_enc(sig, slen, t + n);
    return t;
}

/* A token signed by s; header NULL means {"alg":s->alg,"typ":"JWT"}. */
static char *mk(const signer_t *s, const char *header, const char *payload)
{
    char hbuf[128];
    unsigned char sig[1024];
    char *in;
    size_t slen;

    if (header == NULL) {
        snprintf(hbuf, sizeof(hbuf), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", s->alg);
        header = hbuf;
    }
    in = signing_input(header, payload);
    slen = jwt_sign(s, in, strlen(in), sig);
    free(in);
    return token_with_sig(header, payload, sig, slen);
}

static EVP_PKEY *gen_key(const char *alg)
{
    EVP_PKEY *k;
    if (alg[0] == 'R' || alg[0] == 'P')
        k = EVP_RSA_gen(2048);
    else
        k = EVP_EC_gen(strcmp(alg, "ES256") == 0   ? "P-256"
                       : strcmp(alg, "ES384") == 0 ? "P-384"
                                                   : "P-521");
    ASSERT_NOT_NULL(k);
    return k;
}

static char *bio_text(BIO *bio)
{
    char *data = NULL, *out;
    long n = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static char *pub_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    ASSERT_EQ(PEM_write_bio_PUBKEY(bio, k), 1);
    return bio_text(bio);
}

/* A self-signed certificate for k. */
static char *cert_pem(EVP_PKEY *k)
{
    X509 *x = X509_new();
    X509_NAME *name;
    BIO *bio = BIO_new(BIO_s_mem());

    ASSERT_EQ(X509_set_version(x, 2), 1);
    ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    ASSERT_EQ(X509_set_pubkey(x, k), 1);
    name = X509_get_subject_name(x);
    ASSERT_EQ(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"kr", -1,
                                         -1, 0),
              1);
    ASSERT_EQ(X509_set_issuer_name(x, name), 1);
    ASSERT(X509_sign(x, k, EVP_sha256()) > 0);
    ASSERT_EQ(PEM_write_bio_X509(bio, x), 1);
    X509_free(x);
    return bio_text(bio);
}

static kr_jwt_key_t *pem_key(const char *alg, const char *pem)
{
    kr_jwt_key_t *k = NULL;
    char err[128] = "";
    int rc = kr_jwt_key_pem(&k, alg, pem, strlen(pem), err, sizeof(err));
    if (rc != 0)
        KR_TEST_FAIL("kr_jwt_key_pem(%s): %s", alg, err);
    return k;
}

static kr_jwt_key_t *hmac_key(const char *alg, const void *secret, size_t len)
{
    kr_jwt_key_t *k = NULL;
    char err[128] = "";
    if (kr_jwt_key_hmac(&k, alg, secret, len, err, sizeof(err)) != 0)
        KR_TEST_FAIL("kr_jwt_key_hmac(%s): %s", alg, err);
    return k;
}

/* ---- verification helpers -------------------------------------------------------------------- */

static kr_jwt_opts_t opts_for(kr_jwt_key_t *const *keys, unsigned n)
{
    kr_jwt_opts_t o;
    memset(&o, 0, sizeof(o));
    o.keys = keys;
    o.nkeys = n;
    o.now_s = NOW;
    return o;
}

/* Verifies an exact-size copy of t[0..len); returns the code, sets *err; checks that a
 * failure leaves no claims and no OpenSSL errors behind. */
static int verify_n(const char *t, size_t len, const kr_jwt_opts_t *o, const char **err)
{
    char *copy = malloc(len ? len : 1);
    cJSON *claims = (cJSON *)1;
    int rc;

    memcpy(copy, t, len);
    rc = kr_jwt_verify(copy, len, o, &claims, err);
    free(copy);
    ASSERT_EQ(ERR_peek_error(), 0);
    if (rc == 0) {
        ASSERT(cJSON_IsObject(claims));
        ASSERT_NULL(*err);
        cJSON_Delete(claims);
    } else {
        ASSERT_NULL(claims);
        ASSERT_NOT_NULL(*err);
    }
    return rc;
}

static int verify(const char *t, const kr_jwt_opts_t *o, const char **err)
{
    return verify_n(t, strlen(t), o, err);
}

#define ASSERT_REFUSED(t, o, code, msg)                                                            \
    do {                                                                                           \
        const char *e_ = NULL;                                                                     \
        ASSERT_EQ(verify((t), (o), &e_), (code));                                                  \
        ASSERT_STR_EQ(e_, (msg));                                                                  \
    } while (0)

#define ASSERT_ACCEPTED(t, o)                                                                      \
    do {                                                                                           \
        const char *e_ = NULL;                                                                     \
        int rc_ = verify((t), (o), &e_);                                                           \
        if (rc_ != 0)                                                                              \
            KR_TEST_FAIL("refused (%d): %s", rc_, e_);                                             \
    } while (0)

/* Checks a token made by s, and its claims, against key k. */
static void check_valid(const signer_t *s, kr_jwt_key_t *k)
{
    kr_jwt_opts_t o = opts_for(&k, 1);
    const char *err = NULL;
    cJSON *claims = NULL;
    char *t = mk(s, NULL, "{\"sub\":\"alice\",\"exp\":1700000100,\"iat\":1699999000}");

    o.require_exp = 1;
    ASSERT_OK(kr_jwt_verify(t, strlen(t), &o, &claims, &err));
    ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(claims, "sub")->valuestring, "alice");
    cJSON_Delete(claims);
    ASSERT_STR_EQ(kr_jwt_key_alg(k), s->alg);
    free(t);
}

/* A token of the given payload HS256-signed with secret64, against an HS256 key. */
typedef struct hs_fixture_s {
    kr_jwt_key_t *key;
    signer_t s;
    kr_jwt_opts_t o;
} hs_fixture_t;

static void hs_setup(hs_fixture_t *f)
{
    f->key = hmac_key("HS256", secret64, 32);
    f->s = (signer_t){.alg = "HS256", .secret = secret64, .secret_len = 32};
    f->o = opts_for(&f->key, 1);
}

/* Decodes part (0..2) of t, flips one bit of byte i (from the end when i < 0), re-encodes. */
static char *flip_bit(const char *t, int part, long i, int bit)
{
    const char *start = t, *end;
    unsigned char raw[2048];
    char *out = malloc(strlen(t) + 8), *o = out;
    long n;

    for (int p = 0; p < part; p++)
        start = strchr(start, '.') + 1;
    end = strchr(start, '.');
    if (end == NULL)
        end = start + strlen(start);
    n = kr_base64url_decode(start, (size_t)(end - start), raw);
    ASSERT(n > 0);
    raw[i >= 0 ? i : n + i] ^= (unsigned char)(1u << bit);
    memcpy(o, t, (size_t)(start - t));
    o += start - t;
    o += b64url_enc(raw, (size_t)n, o);
    strcpy(o, end);
    return out;
}

/* ---- base64url ------------------------------------------------------------------------------- */

TEST(base64url_strict)
{
    unsigned char out[16];
    ASSERT_EQ(kr_base64url_decode("", 0, out), 0);
    ASSERT_EQ(kr_base64url_decode("Zg", 2, out), 1);
    ASSERT_EQ(out[0], 'f');
    ASSERT_EQ(kr_base64url_decode("Zm8", 3, out), 2);
    ASSERT_MEM_EQ(out, 2, "fo", 2);
    ASSERT_EQ(kr_base64url_decode("Zm9v", 4, out), 3);
    ASSERT_MEM_EQ(out, 3, "foo", 3);
    ASSERT_EQ(kr_base64url_decode("-_-_", 4, out), 3);
    ASSERT_MEM_EQ(out, 3, "\xfb\xff\xbf", 3);
    ASSERT_EQ(kr_base64url_decode("Zg==", 4, out), -1); /* padding */
    ASSERT_EQ(kr_base64url_decode("Zm8=", 4, out), -1);
    ASSERT_EQ(kr_base64url_decode("Z", 1, out), -1); /* 4n+1 */
    ASSERT_EQ(kr_base64url_decode("Zm9vY", 5, out), -1);
    ASSERT_EQ(kr_base64url_decode("Zh", 2, out), -1); /* non-canonical trailing bits */
    ASSERT_EQ(kr_base64url_decode("Zm9", 3, out), -1);
    ASSERT_EQ(kr_base64url_decode("+/+/", 4, out), -1); /* base64, not base64url */
    ASSERT_EQ(kr_base64url_decode("Zm 9", 4, out), -1);
    ASSERT_EQ(kr_base64url_decode("Zm9\n", 4, out), -1);
    ASSERT_EQ(kr_base64url_decode("Zm\0v", 4, out), -1);
    ASSERT_EQ(kr_base64url_decode("Zm\xc3\xa9", 4, out), -1);
}

/* ---- valid tokens, every algorithm ----------------------------------------------------------- */

TEST(hs_valid)
{
    static const char *const algs[] = {"HS256", "HS384", "HS512"};
    static const size_t lens[] = {32, 48, 64};
    for (size_t i = 0; i < 3; i++) {
        kr_jwt_key_t *k = hmac_key(algs[i], secret64, lens[i]);
        signer_t s = {.alg = algs[i], .secret = secret64, .secret_len = lens[i]};
        check_valid(&s, k);
        kr_jwt_key_free(k);
    }
}

static void pem_family_valid(const char *const *algs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        EVP_PKEY *priv = gen_key(algs[i]);
        char *pem = pub_pem(priv);
        kr_jwt_key_t *k = pem_key(algs[i], pem);
        signer_t s = {.alg = algs[i], .priv = priv};
        check_valid(&s, k);
        kr_jwt_key_free(k);
        free(pem);
        EVP_PKEY_free(priv);
    }
}

TEST(rs_valid)
{
    static const char *const algs[] = {"RS256", "RS384", "RS512"};
    pem_family_valid(algs, 3);
}

TEST(ps_valid)
{
    static const char *const algs[] = {"PS256", "PS384", "PS512"};
    pem_family_valid(algs, 3);
}

TEST(es_valid)
{
    static const char *const algs[] = {"ES256", "ES384", "ES512"};
    pem_family_valid(algs, 3);
}

/* One RSA key serves RS and PS keys alike, but a token only verifies under its own alg. */
TEST(rs_ps_not_interchangeable)
{
    EVP_PKEY *priv = gen_key("RS256");
    char *pem = pub_pem(priv);
    kr_jwt_key_t *rs = pem_key("RS256", pem), *ps = pem_key("PS256", pem);
    kr_jwt_opts_t o = opts_for(&ps, 1);
    signer_t s = {.alg = "RS256", .priv = priv};
    char *t = mk(&s, NULL, "{}");
    /* An RS256 signature presented as PS256. */
    char *t2 = mk(&s, "{\"alg\":\"PS256\"}", "{}");

    ASSERT_REFUSED(t, &o, KR_EPROTO, "algorithm not accepted");
    ASSERT_REFUSED(t2, &o, KR_EPROTO, "bad signature");
    o.keys = &rs;
    ASSERT_ACCEPTED(t, &o);
    free(t);
    free(t2);
    /* PSS with a salt other than the hash length is refused (RFC 7518 3.5). */
    s = (signer_t){.alg = "PS256", .priv = priv, .pss_salt = RSA_PSS_SALTLEN_MAX};
    t = mk(&s, NULL, "{}");
    o.keys = &ps;
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    s.pss_salt = 0;
    t = mk(&s, NULL, "{}");
    ASSERT_ACCEPTED(t, &o);
    free(t);
    kr_jwt_key_free(rs);
    kr_jwt_key_free(ps);
    free(pem);
    EVP_PKEY_free(priv);
}

TEST(certificate_pem)
{
    static const char *const algs[] = {"RS256", "ES256", "ES384"};
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY *priv = gen_key(algs[i]);
        char *pem = cert_pem(priv);
        kr_jwt_key_t *k;
        signer_t s = {.alg = algs[i], .priv = priv};
        ASSERT(strstr(pem, "BEGIN CERTIFICATE") != NULL);
        k = pem_key(algs[i], pem);
        check_valid(&s, k);
        kr_jwt_key_free(k);
        free(pem);
        EVP_PKEY_free(priv);
    }
}

/* ---- time claims ----------------------------------------------------------------------------- */

static int verify_payload(hs_fixture_t *f, const char *payload, const char **err)
{
    char *t = mk(&f->s, NULL, payload);
    int rc = verify(t, &f->o, err);
    free(t);
    return rc;
}

#define ASSERT_PAYLOAD_OK(f, payload)                                                              \
    do {                                                                                           \
        const char *e_ = NULL;                                                                     \
        if (verify_payload((f), (payload), &e_) != 0)                                              \
            KR_TEST_FAIL("%s refused: %s", (payload), e_);                                         \
    } while (0)

#define ASSERT_PAYLOAD_REFUSED(f, payload, msg)                                                    \
    do {                                                                                           \
        const char *e_ = NULL;                                                                     \
        ASSERT_EQ(verify_payload((f), (payload), &e_), KR_EPROTO);                                 \
        ASSERT_STR_EQ(e_, (msg));                                                                  \
    } while (0)

TEST(expiry)
{
    hs_fixture_t f;
    hs_setup(&f);
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1}", "token expired");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1700000000}", "token expired"); /* now == exp */
    ASSERT_PAYLOAD_OK(&f, "{\"exp\":1700000001}");
    ASSERT_PAYLOAD_OK(&f, "{\"exp\":1700000000.5}");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1699999999.5}", "token expired");
    ASSERT_PAYLOAD_OK(&f, "{\"exp\":1e300}");
    ASSERT_PAYLOAD_OK(&f, "{}");
    f.o.require_exp = 1;
    ASSERT_PAYLOAD_REFUSED(&f, "{}", "token has no expiry");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":null}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":\"1800000000\"}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":[1800000000]}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1e999}", "bad claims"); /* infinity */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1800000000,\"exp\":1}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1,\"exp\":1800000000}", "bad claims");
    /* Member names are case-sensitive: "EXP" is not exp. */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"EXP\":1800000000}", "token has no expiry");
    kr_jwt_key_free(f.key);
}

TEST(not_before)
{
    hs_fixture_t f;
    hs_setup(&f);
    ASSERT_PAYLOAD_REFUSED(&f, "{\"nbf\":1700000001}", "token not yet valid");
    ASSERT_PAYLOAD_OK(&f, "{\"nbf\":1700000000}"); /* now == nbf is valid */
    ASSERT_PAYLOAD_OK(&f, "{\"nbf\":1}");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"nbf\":true}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iat\":\"yesterday\"}", "bad claims");
    ASSERT_PAYLOAD_OK(&f, "{\"iat\":1800000000}"); /* iat is only type-checked */
    kr_jwt_key_free(f.key);
}

TEST(leeway_edges)
{
    hs_fixture_t f;
    hs_setup(&f);
    f.o.leeway_s = 30;
    ASSERT_PAYLOAD_OK(&f, "{\"exp\":1699999971}");                       /* now < exp + 30 */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1699999970}", "token expired"); /* now == exp + 30 */
    ASSERT_PAYLOAD_OK(&f, "{\"nbf\":1700000030}");                       /* now + 30 == nbf */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"nbf\":1700000031}", "token not yet valid");
    f.o.leeway_s = -100; /* counts as 0 */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"exp\":1700000000}", "token expired");
    ASSERT_PAYLOAD_OK(&f, "{\"exp\":1700000001}");
    ASSERT_PAYLOAD_OK(&f, "{\"nbf\":1700000000}");
    kr_jwt_key_free(f.key);
}

/* now_s 0 reads the real clock. */
TEST(real_clock)
{
    hs_fixture_t f;
    char payload[64];
    hs_setup(&f);
    f.o.now_s = 0;
    snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)time(NULL) + 600);
    ASSERT_PAYLOAD_OK(&f, payload);
    snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)time(NULL) - 600);
    ASSERT_PAYLOAD_REFUSED(&f, payload, "token expired");
    kr_jwt_key_free(f.key);
}

/* ---- issuer and audience --------------------------------------------------------------------- */

TEST(issuer)
{
    hs_fixture_t f;
    hs_setup(&f);
    f.o.issuer = "https://id.example";
    ASSERT_PAYLOAD_OK(&f, "{\"iss\":\"https://id.example\"}");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":\"https://evil.example\"}", "wrong issuer");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":\"https://ID.example\"}", "wrong issuer");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":\"https://id.example/\"}", "wrong issuer");
    ASSERT_PAYLOAD_REFUSED(&f, "{}", "wrong issuer");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":[\"https://id.example\"]}", "wrong issuer");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":\"x\",\"iss\":\"https://id.example\"}", "bad claims");
    /* An embedded NUL would make the C string equal to the issuer: refused before that. */
    ASSERT_PAYLOAD_REFUSED(&f, "{\"iss\":\"https://id.example\\u0000.evil\"}", "malformed token");
    f.o.issuer = NULL;
    ASSERT_PAYLOAD_OK(&f, "{\"iss\":\"https://evil.example\"}");
    kr_jwt_key_free(f.key);
}

TEST(audience)
{
    static const char *const auds[] = {"api", "hub"};
    hs_fixture_t f;
    hs_setup(&f);
    f.o.audiences = auds;
    f.o.naudiences = 1;
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":\"api\"}");
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":[\"other\",\"api\"]}");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":\"hub\"}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":\"API\"}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":[\"other\",\"hub\"]}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":[]}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":{\"api\":1}}", "wrong audience");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":[\"api\",7]}", "bad claims");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"aud\":\"api\",\"aud\":\"x\"}", "bad claims");
    f.o.naudiences = 2;
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":\"hub\"}");
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":[\"hub\"]}");
    f.o.naudiences = 0;
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":\"anything\"}");
    ASSERT_PAYLOAD_OK(&f, "{\"aud\":[1,2]}"); /* not checked, so not type-checked either */
    kr_jwt_key_free(f.key);
}

/* ---- signatures ------------------------------------------------------------------------------ */

/* A bit flipped in the header, the payload or the signature of a token signed by s. */
static void check_bit_flips(const signer_t *s, kr_jwt_key_t *k)
{
    kr_jwt_opts_t o = opts_for(&k, 1);
    char header[64];
    char *t, *bad;
    static const struct {
        int part;
        long byte;
    } spots[] = {{0, -3}, {1, 10}, {1, -3}, {2, 0}, {2, 17}, {2, -1}};

    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"x\":\"aaaa\"}", s->alg);
    t = mk(s, header, "{\"sub\":\"alice-and-bob\"}");
    ASSERT_ACCEPTED(t, &o);
    for (size_t i = 0; i < KR_ARRAY_SIZE(spots); i++)
        for (int bit = 0; bit < 8; bit += 3) {
            if (spots[i].part != 2 && bit > 5)
                continue; /* keep header and payload printable ASCII */
            bad = flip_bit(t, spots[i].part, spots[i].byte, bit);
            ASSERT_REFUSED(bad, &o, KR_EPROTO, "bad signature");
            free(bad);
        }
    free(t);
}

TEST(flipped_bits)
{
    static const char *const algs[] = {"RS256", "PS256", "ES256", "ES384"};
    hs_fixture_t f;
    hs_setup(&f);
    check_bit_flips(&f.s, f.key);
    kr_jwt_key_free(f.key);
    for (size_t i = 0; i < KR_ARRAY_SIZE(algs); i++) {
        EVP_PKEY *priv = gen_key(algs[i]);
        char *pem = pub_pem(priv);
        kr_jwt_key_t *k = pem_key(algs[i], pem);
        signer_t s = {.alg = algs[i], .priv = priv};
        check_bit_flips(&s, k);
        kr_jwt_key_free(k);
        free(pem);
        EVP_PKEY_free(priv);
    }
}

TEST(wrong_key)
{
    EVP_PKEY *a = gen_key("ES256"), *b = gen_key("ES256");
    char *pem = pub_pem(b);
    kr_jwt_key_t *k = pem_key("ES256", pem), *hk = hmac_key("HS256", secret64 + 1, 32);
    kr_jwt_opts_t o = opts_for(&k, 1);
    signer_t s = {.alg = "ES256", .priv = a};
    hs_fixture_t f;
    char *t = mk(&s, NULL, "{}");

    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    hs_setup(&f);
    t = mk(&f.s, NULL, "{}");
    o.keys = &hk;
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    kr_jwt_key_free(f.key);
    kr_jwt_key_free(hk);
    kr_jwt_key_free(k);
    free(pem);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

TEST(es_signature_length)
{
    EVP_PKEY *priv = gen_key("ES256");
    char *pem = pub_pem(priv);
    kr_jwt_key_t *k = pem_key("ES256", pem);
    kr_jwt_opts_t o = opts_for(&k, 1);
    char *in = signing_input("{\"alg\":\"ES256\"}", "{}");
    unsigned char der[256], raw[128] = {0};
    size_t der_len = sizeof(der), n;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    char *t;

    ASSERT_EQ(EVP_DigestSignInit_ex(mctx, NULL, "SHA256", NULL, NULL, priv, NULL), 1);
    ASSERT_EQ(EVP_DigestSign(mctx, der, &der_len, (const unsigned char *)in, strlen(in)), 1);
    EVP_MD_CTX_free(mctx);
    n = der_to_jose(der, der_len, 32, raw);
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, n);
    ASSERT_ACCEPTED(t, &o);
    free(t);
    /* The same signature in DER, as OpenSSL produced it: not JOSE. */
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", der, der_len);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    /* One byte short, one byte long (a leading zero on r), and P-384-sized. */
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, 63);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    memmove(raw + 1, raw, 64);
    raw[0] = 0;
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, 65);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, 96);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    /* r = s = 0, the "psychic signature" (CVE-2022-21449). */
    memset(raw, 0, 64);
    t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, 64);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    /* r = s = n (the group order), which a mod-n reduction would turn into 0. */
    {
        static const unsigned char order[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
                                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
                                                0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
        memcpy(raw, order, 32);
        memcpy(raw + 32, order, 32);
        t = token_with_sig("{\"alg\":\"ES256\"}", "{}", raw, 64);
        ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
        free(t);
    }
    free(in);
    kr_jwt_key_free(k);
    free(pem);
    EVP_PKEY_free(priv);
}

TEST(rsa_signature_length)
{
    EVP_PKEY *priv = gen_key("RS256");
    char *pem = pub_pem(priv);
    kr_jwt_key_t *k = pem_key("RS256", pem);
    kr_jwt_opts_t o = opts_for(&k, 1);
    signer_t s = {.alg = "RS256", .priv = priv};
    char *in = signing_input("{\"alg\":\"RS256\"}", "{}");
    unsigned char sig[1024];
    size_t n = jwt_sign(&s, in, strlen(in), sig);
    char *t;

    ASSERT_EQ(n, 256);
    t = token_with_sig("{\"alg\":\"RS256\"}", "{}", sig, n - 1);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    memmove(sig + 1, sig, n);
    sig[0] = 0;
    t = token_with_sig("{\"alg\":\"RS256\"}", "{}", sig, n + 1);
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    t = token_with_sig("{\"alg\":\"RS256\"}", "{}", sig + 1, n);
    ASSERT_ACCEPTED(t, &o);
    free(t);
    free(in);
    kr_jwt_key_free(k);
    free(pem);
    EVP_PKEY_free(priv);
}

TEST(hmac_signature_length)
{
    hs_fixture_t f;
    char *in;
    unsigned char sig[64];
    size_t n;
    char *t;

    hs_setup(&f);
    in = signing_input("{\"alg\":\"HS256\"}", "{}");
    n = jwt_sign(&f.s, in, strlen(in), sig);
    ASSERT_EQ(n, 32);
    t = token_with_sig("{\"alg\":\"HS256\"}", "{}", sig, 16); /* a truncated MAC */
    ASSERT_REFUSED(t, &f.o, KR_EPROTO, "bad signature");
    free(t);
    t = token_with_sig("{\"alg\":\"HS256\"}", "{}", sig, 31);
    ASSERT_REFUSED(t, &f.o, KR_EPROTO, "bad signature");
    free(t);
    free(in);
    kr_jwt_key_free(f.key);
}

/* ---- algorithm confusion and none ------------------------------------------------------------ */

TEST(alg_none)
{
    static const char *const names[] = {"none", "None", "NONE", "nOnE"};
    hs_fixture_t f;
    char header[64], *t;
    unsigned char sig[32] = {1};

    hs_setup(&f);
    for (size_t i = 0; i < KR_ARRAY_SIZE(names); i++) {
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", names[i]);
        t = token_with_sig(header, "{\"sub\":\"admin\"}", sig, 0);
        ASSERT_REFUSED(t, &f.o, KR_EPROTO, "alg none is refused");
        free(t);
        t = token_with_sig(header, "{\"sub\":\"admin\"}", sig, 32);
        ASSERT_REFUSED(t, &f.o, KR_EPROTO, "alg none is refused");
        free(t);
    }
    /* An empty signature under a real alg. */
    t = token_with_sig("{\"alg\":\"HS256\"}", "{}", sig, 0);
    ASSERT_REFUSED(t, &f.o, KR_EPROTO, "malformed token");
    free(t);
    kr_jwt_key_free(f.key);
}

/* The classic attack: HMAC the token with the server's RSA public key PEM as the secret. */
TEST(hs_rs_confusion)
{
    EVP_PKEY *priv = gen_key("RS256");
    char *pem = pub_pem(priv);
    kr_jwt_key_t *keys[2] = {pem_key("RS256", pem), NULL};
    kr_jwt_opts_t o = opts_for(keys, 1);
    signer_t s = {.alg = "HS256", .secret = pem, .secret_len = strlen(pem)};
    char *t = mk(&s, NULL, "{\"sub\":\"admin\"}");
    kr_jwt_key_t *hs;
    char err[128];

    ASSERT_REFUSED(t, &o, KR_EPROTO, "algorithm not accepted");
    /* With an HS256 key configured as well (another secret), it is just a bad signature. */
    keys[1] = hmac_key("HS256", secret64, 64);
    o.nkeys = 2;
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    /* And the RSA key still verifies only RS256 tokens. */
    free(t);
    s = (signer_t){.alg = "RS256", .priv = priv};
    t = mk(&s, NULL, "{}");
    ASSERT_ACCEPTED(t, &o);
    /* A PEM key can't be made for an HS alg, nor an HMAC key for an RS alg. */
    ASSERT_EQ(kr_jwt_key_pem(&hs, "HS256", pem, strlen(pem), err, sizeof(err)), KR_EINVAL);
    ASSERT_NULL(hs);
    ASSERT_EQ(kr_jwt_key_hmac(&hs, "RS256", pem, strlen(pem), err, sizeof(err)), KR_EINVAL);
    ASSERT_NULL(hs);
    free(t);
    kr_jwt_key_free(keys[0]);
    kr_jwt_key_free(keys[1]);
    free(pem);
    EVP_PKEY_free(priv);
}

TEST(header_rules)
{
    hs_fixture_t f;
    const char *err;
    char *t;
    static const struct {
        const char *header, *msg;
    } cases[] = {
        {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", NULL},
        {"{\"alg\":\"HS256\",\"typ\":\"jwt\"}", NULL},
        {"{\"alg\":\"HS256\",\"typ\":\"application/JWT\"}", NULL},
        {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", NULL},
        {"{\"alg\":\"HS256\",\"crit\":[]}", NULL},
        {"{\"alg\":\"HS256\",\"jku\":\"https://evil.example/jwks\",\"x5u\":\"x\"}", NULL},
        {"{\"alg\":\"HS256\",\"typ\":\"dpop+jwt\"}", "token type not accepted"},
        {"{\"alg\":\"HS256\",\"typ\":\"JWS\"}", "token type not accepted"},
        {"{\"alg\":\"HS256\",\"typ\":1}", "token type not accepted"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "critical header not supported"},
        {"{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", "critical header not supported"},
        {"{\"alg\":\"HS256\",\"crit\":\"exp\"}", "critical header not supported"},
        {"{\"alg\":\"HS256\",\"cty\":\"JWT\"}", "nested token not supported"},
        {"{\"alg\":\"hs256\"}", "algorithm not accepted"},
        {"{\"alg\":\"HS257\"}", "algorithm not accepted"},
        {"{\"alg\":\"RS256\"}", "algorithm not accepted"},
        {"{\"alg\":\"\"}", "algorithm not accepted"},
        {"{\"alg\":256}", "bad token header"},
        {"{\"alg\":null}", "bad token header"},
        {"{\"typ\":\"JWT\"}", "bad token header"},
        {"{\"ALG\":\"HS256\"}", "bad token header"},
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "bad token header"},
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "bad token header"},
        {"{\"alg\":\"HS256\",\"kid\":5}", "bad token header"},
        {"[\"HS256\"]", "malformed token"},
        {"\"HS256\"", "malformed token"},
        {"{\"alg\":\"HS256\"} x", "malformed token"},
        {"{\"alg\":\"HS256\"", "malformed token"},
        {"{\"alg\":\"HS256\\u0000\"}", "malformed token"},
        {"{\"alg\":\"HS256\",\"x\":\"\xff\"}", "malformed token"},
        {" {\"alg\":\"HS256\"}\n", NULL},
    };

    hs_setup(&f);
    for (size_t i = 0; i < KR_ARRAY_SIZE(cases); i++) {
        t = mk(&f.s, cases[i].header, "{}");
        err = NULL;
        if (cases[i].msg == NULL) {
            if (verify(t, &f.o, &err) != 0)
                KR_TEST_FAIL("%s refused: %s", cases[i].header, err);
        } else {
            ASSERT_EQ(verify(t, &f.o, &err), KR_EPROTO);
            if (strcmp(err, cases[i].msg) != 0)
                KR_TEST_FAIL("%s: \"%s\", want \"%s\"", cases[i].header, err, cases[i].msg);
        }
        free(t);
    }
    kr_jwt_key_free(f.key);
}

TEST(kid_selection)
{
    kr_jwt_key_t *keys[2] = {hmac_key("HS256", secret64 + 1, 32), hmac_key("HS256", secret64, 32)};
    kr_jwt_opts_t o = opts_for(keys, 2);
    signer_t s = {.alg = "HS256", .secret = secret64, .secret_len = 32};
    char *t;

    /* No kids anywhere: keys are tried in order, the second one verifies. */
    t = mk(&s, NULL, "{}");
    ASSERT_ACCEPTED(t, &o);
    free(t);
    kr_jwt_key_set_kid(keys[0], "old");
    kr_jwt_key_set_kid(keys[1], "new");
    t = mk(&s, "{\"alg\":\"HS256\",\"kid\":\"new\"}", "{}");
    ASSERT_ACCEPTED(t, &o);
    free(t);
    t = mk(&s, "{\"alg\":\"HS256\",\"kid\":\"old\"}", "{}");
    ASSERT_REFUSED(t, &o, KR_EPROTO, "bad signature");
    free(t);
    t = mk(&s, "{\"alg\":\"HS256\",\"kid\":\"other\"}", "{}");
    ASSERT_REFUSED(t, &o, KR_EPROTO, "no key matches kid");
    free(t);
    t = mk(&s, NULL, "{}"); /* a token without kid still tries every key */
    ASSERT_ACCEPTED(t, &o);
    free(t);
    kr_jwt_key_set_kid(keys[1], NULL); /* a key without kid takes any kid */
    t = mk(&s, "{\"alg\":\"HS256\",\"kid\":\"other\"}", "{}");
    ASSERT_ACCEPTED(t, &o);
    free(t);
    kr_jwt_key_free(keys[0]);
    kr_jwt_key_free(keys[1]);
}

/* ---- malformed tokens ------------------------------------------------------------------------ */

TEST(malformed)
{
    hs_fixture_t f;
    char *t, *bad;
    size_t n;
    static const char *const shapes[] = {
        "",
        ".",
        "..",
        "...",
        "abc",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        ".e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln.",
        "eyJhbGciOiJIUzI1NiJ9.e30..c2ln",
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30=.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln=",
        "eyJhbGciOiJIUzI1NiJ9.e3+.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2l/",
        " eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln\n",
        "eyJhbGciOiJIUzI1NiJ9.e31.c2ln", /* non-canonical: "e31" has a low bit set */
        "YWJj.e30.c2ln",                 /* header "abc" */
    };

    hs_setup(&f);
    for (size_t i = 0; i < KR_ARRAY_SIZE(shapes); i++) {
        const char *err = NULL;
        ASSERT_EQ(verify(shapes[i], &f.o, &err), KR_EPROTO);
        if (strcmp(err, "malformed token") != 0)
            KR_TEST_FAIL("\"%s\": %s", shapes[i], err);
    }
    /* A valid token whose signature gets non-canonical trailing bits: a 32-byte MAC is 43
     * characters, the last one carrying 2 unused bits. Setting one gives other text for the
     * same bytes, which must be refused as malformed, not verified. */
    t = mk(&f.s, NULL, "{}");
    ASSERT_ACCEPTED(t, &f.o);
    n = strlen(t);
    bad = strdup(t);
    {
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int v = (int)(strchr(tbl, bad[n - 1]) - tbl);
        ASSERT_EQ(v & 3, 0);
        bad[n - 1] = tbl[v | 1];
    }
    ASSERT_REFUSED(bad, &f.o, KR_EPROTO, "malformed token");
    /* Padding appended to an otherwise valid token. */
    free(bad);
    bad = malloc(n + 3);
    memcpy(bad, t, n);
    memcpy(bad + n, "==", 3);
    ASSERT_REFUSED(bad, &f.o, KR_EPROTO, "malformed token");
    free(bad);
    free(t);
    /* Payloads that verify but are not JSON objects. */
    ASSERT_PAYLOAD_REFUSED(&f, "not json", "malformed token");
    ASSERT_PAYLOAD_REFUSED(&f, "[1,2]", "malformed token");
    ASSERT_PAYLOAD_REFUSED(&f, "\"sub\"", "malformed token");
    ASSERT_PAYLOAD_REFUSED(&f, "{} {}", "malformed token");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"sub\":\"a\tb\"}", "malformed token");
    ASSERT_PAYLOAD_REFUSED(&f, "{\"sub\":\"\xc0\xaf\"}", "malformed token");
    ASSERT_PAYLOAD_OK(&f,
                      "{\"sub\":\"caf\xc3\xa9\",\"n\":\"\\\\u0000\"}"); /* an escaped backslash */
    kr_jwt_key_free(f.key);
}

/* A payload byte the signature does not cover (payload text cut short) and NUL bytes. */
TEST(embedded_nul)
{
    hs_fixture_t f;
    char *t;
    size_t n;
    const char *err;

    hs_setup(&f);
    t = mk(&f.s, NULL, "{}");
    n = strlen(t);
    /* The token with a NUL appended, and one where a dot became a NUL. */
    t = realloc(t, n + 2);
    t[n] = '\0';
    ASSERT_EQ(verify_n(t, n + 1, &f.o, &err), KR_EPROTO);
    ASSERT_STR_EQ(err, "malformed token");
    *strchr(t, '.') = '\0';
    ASSERT_EQ(verify_n(t, n, &f.o, &err), KR_EPROTO);
    ASSERT_STR_EQ(err, "malformed token");
    free(t);
    kr_jwt_key_free(f.key);
}

TEST(oversized)
{
    hs_fixture_t f;
    char *big = malloc(20000), *t;
    size_t n;
    const char *err;

    hs_setup(&f);
    memset(big, '!', 20000); /* not base64url either: the size check must come first */
    ASSERT_EQ(verify_n(big, 8193, &f.o, &err), KR_ELIMIT);
    ASSERT_STR_EQ(err, "token too large");
    ASSERT_EQ(verify_n(big, 8192, &f.o, &err), KR_EPROTO);
    ASSERT_STR_EQ(err, "malformed token");
    t = mk(&f.s, NULL, "{\"sub\":\"alice\"}");
    n = strlen(t);
    f.o.max_token_bytes = n;
    ASSERT_ACCEPTED(t, &f.o);
    f.o.max_token_bytes = n - 1;
    ASSERT_REFUSED(t, &f.o, KR_ELIMIT, "token too large");
    free(t);
    /* A large valid token under a raised limit. */
    memset(big, 'a', 15000);
    memcpy(big, "{\"pad\":\"", 8);
    memcpy(big + 15000 - 2, "\"}", 3);
    t = mk(&f.s, NULL, big);
    f.o.max_token_bytes = 0;
    ASSERT_REFUSED(t, &f.o, KR_ELIMIT, "token too large");
    f.o.max_token_bytes = 32768;
    ASSERT_ACCEPTED(t, &f.o);
    free(t);
    free(big);
    kr_jwt_key_free(f.key);
}

TEST(bad_arguments)
{
    hs_fixture_t f;
    cJSON *claims = NULL;
    const char *err = NULL;
    char *t;

    hs_setup(&f);
    t = mk(&f.s, NULL, "{}");
    ASSERT_EQ(kr_jwt_verify(t, strlen(t), NULL, &claims, &err), KR_EINVAL);
    ASSERT_EQ(kr_jwt_verify(t, strlen(t), &f.o, NULL, &err), KR_EINVAL);
    ASSERT_EQ(kr_jwt_verify(NULL, 5, &f.o, &claims, &err), KR_EINVAL);
    f.o.nkeys = 0;
    ASSERT_EQ(kr_jwt_verify(t, strlen(t), &f.o, &claims, &err), KR_EINVAL);
    ASSERT_STR_EQ(err, "no keys configured");
    f.o.nkeys = 1;
    ASSERT_OK(kr_jwt_verify(t, strlen(t), &f.o, &claims, NULL)); /* err may be NULL */
    cJSON_Delete(claims);
    /* A NULL entry in the key list is skipped. */
    {
        kr_jwt_key_t *keys[2] = {NULL, f.key};
        f.o.keys = keys;
        f.o.nkeys = 2;
        ASSERT_ACCEPTED(t, &f.o);
        f.o.keys = &f.key;
    }
    free(t);
    kr_jwt_key_free(f.key);
    kr_jwt_key_free(NULL);
}

/* ---- key creation ---------------------------------------------------------------------------- */

static void expect_pem_refused(const char *alg, const char *pem)
{
    kr_jwt_key_t *k = (kr_jwt_key_t *)1;
    char err[128] = "";
    ASSERT_EQ(kr_jwt_key_pem(&k, alg, pem, pem ? strlen(pem) : 0, err, sizeof(err)), KR_EINVAL);
    ASSERT_NULL(k);
    ASSERT(err[0] != '\0');
    ASSERT_EQ(ERR_peek_error(), 0);
}

TEST(key_type_mismatch)
{
    EVP_PKEY *rsa = gen_key("RS256"), *p256 = gen_key("ES256"), *p384 = gen_key("ES384");
    EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
    char *rsa_pem = pub_pem(rsa), *p256_pem = pub_pem(p256), *p384_pem = pub_pem(p384);
    char *rsa1024_pem = pub_pem(rsa1024), *p256_cert = cert_pem(p256);
    BIO *bio = BIO_new(BIO_s_mem());
    char *priv_pem;

    ASSERT_EQ(PEM_write_bio_PrivateKey(bio, rsa, NULL, NULL, 0, NULL, NULL), 1);
    priv_pem = bio_text(bio);
    expect_pem_refused("ES256", rsa_pem);
    expect_pem_refused("ES384", rsa_pem);
    expect_pem_refused("RS256", p256_pem);
    expect_pem_refused("PS256", p256_pem);
    expect_pem_refused("ES256", p384_pem);
    expect_pem_refused("ES384", p256_pem);
    expect_pem_refused("ES512", p256_pem);
    expect_pem_refused("RS256", p256_cert);
    expect_pem_refused("ES384", p256_cert);
    expect_pem_refused("RS256", rsa1024_pem);
    expect_pem_refused("RS256", priv_pem);
    expect_pem_refused("HS256", rsa_pem);
    expect_pem_refused("none", rsa_pem);
    expect_pem_refused("rs256", rsa_pem);
    expect_pem_refused(NULL, rsa_pem);
    expect_pem_refused("RS256", NULL);
    expect_pem_refused("RS256", "");
    expect_pem_refused("RS256", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    expect_pem_refused("RS256", "not a pem at all");
    /* The same PEMs pass with the right algorithm. */
    kr_jwt_key_free(pem_key("RS256", rsa_pem));
    kr_jwt_key_free(pem_key("PS512", rsa_pem));
    kr_jwt_key_free(pem_key("ES256", p256_pem));
    kr_jwt_key_free(pem_key("ES256", p256_cert));
    kr_jwt_key_free(pem_key("ES384", p384_pem));
    free(rsa_pem);
    free(p256_pem);
    free(p384_pem);
    free(rsa1024_pem);
    free(p256_cert);
    free(priv_pem);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa1024);
}

TEST(hmac_secret_length)
{
    static const struct {
        const char *alg;
        size_t min;
    } cases[] = {{"HS256", 32}, {"HS384", 48}, {"HS512", 64}};
    kr_jwt_key_t *k;
    char err[128];

    for (size_t i = 0; i < KR_ARRAY_SIZE(cases); i++) {
        ASSERT_EQ(kr_jwt_key_hmac(&k, cases[i].alg, secret64, cases[i].min - 1, err, sizeof(err)),
                  KR_EINVAL);
        ASSERT_NULL(k);
        ASSERT(strstr(err, "too short") != NULL);
        ASSERT_OK(kr_jwt_key_hmac(&k, cases[i].alg, secret64, cases[i].min, err, sizeof(err)));
        kr_jwt_key_free(k);
    }
    ASSERT_EQ(kr_jwt_key_hmac(&k, "HS256", NULL, 32, err, sizeof(err)), KR_EINVAL);
    ASSERT_EQ(kr_jwt_key_hmac(&k, "HS1024", secret64, 64, err, sizeof(err)), KR_EINVAL);
    ASSERT_EQ(kr_jwt_key_hmac(&k, "ES256", secret64, 64, err, sizeof(err)), KR_EINVAL);
    ASSERT_EQ(kr_jwt_key_hmac(&k, "HS256", secret64, 10, NULL, 0), KR_EINVAL); /* no err buffer */
    ASSERT_EQ(kr_jwt_key_hmac(&k, "HS256", secret64, 10, err, 4), KR_EINVAL);  /* truncated */
    ASSERT_EQ(strlen(err), 3);
    ASSERT(kr_jwt_alg_supported("ES512") && kr_jwt_alg_supported("PS384"));
    ASSERT(!kr_jwt_alg_supported("none") && !kr_jwt_alg_supported("EdDSA") &&
           !kr_jwt_alg_supported(NULL));
}

/* Claims come back whole, and error texts never echo the token. */
TEST(claims_and_errors)
{
    hs_fixture_t f;
    cJSON *claims = NULL;
    const char *err = NULL;
    char *t;

    hs_setup(&f);
    t = mk(&f.s, NULL, "{\"sub\":\"alice\",\"roles\":[\"admin\"],\"n\":{\"x\":1}}");
    ASSERT_OK(kr_jwt_verify(t, strlen(t), &f.o, &claims, &err));
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(claims, "roles")), 1);
    cJSON_Delete(claims);
    free(t);
    t = mk(&f.s, NULL, "{\"sub\":\"SECRET-SUB\",\"exp\":1}");
    ASSERT_EQ(kr_jwt_verify(t, strlen(t), &f.o, &claims, &err), KR_EPROTO);
    ASSERT(strstr(err, "SECRET") == NULL && strstr(err, "eyJ") == NULL);
    free(t);
    kr_jwt_key_free(f.key);
}

KR_TEST_MAIN(KR_TEST_ENTRY(base64url_strict), KR_TEST_ENTRY(hs_valid), KR_TEST_ENTRY(rs_valid),
             KR_TEST_ENTRY(ps_valid), KR_TEST_ENTRY(es_valid),
             KR_TEST_ENTRY(rs_ps_not_interchangeable), KR_TEST_ENTRY(certificate_pem),
             KR_TEST_ENTRY(expiry), KR_TEST_ENTRY(not_before), KR_TEST_ENTRY(leeway_edges),
             KR_TEST_ENTRY(real_clock), KR_TEST_ENTRY(issuer), KR_TEST_ENTRY(audience),
             KR_TEST_ENTRY(flipped_bits), KR_TEST_ENTRY(wrong_key),
             KR_TEST_ENTRY(es_signature_length), KR_TEST_ENTRY(rsa_signature_length),
             KR_TEST_ENTRY(hmac_signature_length), KR_TEST_ENTRY(alg_none),
             KR_TEST_ENTRY(hs_rs_confusion), KR_TEST_ENTRY(header_rules),
             KR_TEST_ENTRY(kid_selection), KR_TEST_ENTRY(malformed), KR_TEST_ENTRY(embedded_nul),
             KR_TEST_ENTRY(oversized), KR_TEST_ENTRY(bad_arguments),
             KR_TEST_ENTRY(key_type_mismatch), KR_TEST_ENTRY(hmac_secret_length),
             KR_TEST_ENTRY(claims_and_errors))
