/* fuzz_jwt.c: libFuzzer target for JWT verification (core/kr_jwt.c).
 *
 * Random bytes almost never carry a valid signature, so only feeding them as tokens would
 * leave the payload and claims code unreached. The first byte picks a mode:
 *   0: the rest is the token, verified as it is; the strict base64url decoder also runs on it
 *      alone and must round-trip (whatever it accepts re-encodes to the same text);
 *   1, 2: the rest is header JSON, a NUL, payload JSON; the harness base64url-encodes both and
 *      signs them with the HS256 secret (1) or the ES256 private key (2) it configured (with
 *      the unit tests' signer, tests/unit/jwt_sign.h), so every input reaches the header,
 *      signature and claims checks.
 * The second byte picks the options (issuer, audiences, require_exp, leeway, size limit).
 * Every call must leave no claims and a static error on failure, an object and no error on
 * success, and an empty OpenSSL error queue either way. Tokens are verified from an
 * exact-size heap copy so ASan sees any read past the end.
 */
#include "kr_jwt.h"

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include "../unit/jwt_sign.h"

static const char secret[] = "fuzz-secret-fuzz-secret-fuzz-secret!";

typedef struct state_s {
    kr_jwt_key_t *keys[2]; /* HS256, ES256 */
    EVP_PKEY *es_priv;
} state_t;

static void check(int cond)
{
    if (!cond)
        abort();
}

static const state_t *state(void)
{
    static state_t st;
    char err[128];
    BIO *bio;
    char *pem = NULL;
    long n;

    if (st.keys[0] != NULL)
        return &st;
    check(kr_jwt_key_hmac(&st.keys[0], "HS256", secret, strlen(secret), err, sizeof(err)) == 0);
    st.es_priv = EVP_EC_gen("P-256");
    check(st.es_priv != NULL);
    bio = BIO_new(BIO_s_mem());
    check(PEM_write_bio_PUBKEY(bio, st.es_priv) == 1);
    n = BIO_get_mem_data(bio, &pem);
    check(kr_jwt_key_pem(&st.keys[1], "ES256", pem, (size_t)n, err, sizeof(err)) == 0);
    BIO_free(bio);
    return &st;
}

/* Options from one byte. */
static void options(uint8_t b, kr_jwt_opts_t *o, const state_t *st)
{
    static const char *const auds[] = {"api", "hub"};
    memset(o, 0, sizeof(*o));
    o->keys = st->keys;
    o->nkeys = 2;
    o->now_s = 1700000000;
    o->issuer = (b & 1) ? "iss" : NULL;
    o->audiences = auds;
    o->naudiences = (b >> 1) & 3 ? ((b >> 1) & 3) % 3 : 0;
    o->require_exp = (b >> 3) & 1;
    o->leeway_s = (b >> 4) & 1 ? 60 : 0;
    o->max_token_bytes = (b >> 5) & 1 ? 512 : 0;
}

static void verify(const char *t, size_t len, const kr_jwt_opts_t *o)
{
    char *copy = malloc(len ? len : 1);
    cJSON *claims = (cJSON *)1;
    const char *err = (const char *)1;
    int rc;

    memcpy(copy, t, len);
    rc = kr_jwt_verify(copy, len, o, &claims, &err);
    free(copy);
    check(ERR_peek_error() == 0);
    if (rc == 0) {
        check(err == NULL && cJSON_IsObject(claims));
        cJSON_Delete(claims);
    } else {
        check(rc == KR_EPROTO || rc == KR_ELIMIT);
        check(claims == NULL && err != NULL && strlen(err) < 64);
    }
}

/* Whatever the decoder accepts is the canonical encoding of what it returns. */
static void base64_round_trip(const char *p, size_t len)
{
    unsigned char *raw = malloc(len + 1);
    char *again;
    long n = kr_base64url_decode(p, len, raw);

    if (n >= 0) {
        check((size_t)n == len * 3 / 4);
        again = malloc(len + 4);
        check(b64url_enc(raw, (size_t)n, again) == len && memcmp(again, p, len) == 0);
        free(again);
    }
    free(raw);
}

/* HS256 or ES256 JOSE signature over in[0..len) (sig: 64 bytes). */
static size_t sign(const state_t *st, int es, const char *in, size_t len, unsigned char *sig)
{
    signer_t s = {.alg = es ? "ES256" : "HS256",
                  .priv = st->es_priv,
                  .secret = secret,
                  .secret_len = strlen(secret)};

    return jwt_sign(&s, in, len, sig);
}

/* header NUL payload -> a token signed by the harness. */
static void signed_token(const state_t *st, int es, const char *p, size_t len,
                         const kr_jwt_opts_t *o)
{
    const char *nul = memchr(p, '\0', len);
    size_t hl = nul ? (size_t)(nul - p) : len;
    const char *pl = nul ? nul + 1 : "";
    size_t pll = nul ? len - hl - 1 : 0;
    char *t = malloc(2 * len + 200);
    unsigned char sig[64];
    size_t n;

    n = b64url_enc((const unsigned char *)p, hl, t);
    t[n++] = '.';
    n += b64url_enc((const unsigned char *)pl, pll, t + n);
    t[n] = '.';
    n += 1 + b64url_enc(sig, sign(st, es, t, n, sig), t + n + 1);
    verify(t, n, o);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const state_t *st = state();
    kr_jwt_opts_t o;
    const char *p = (const char *)data + 2;

    if (size < 2)
        return 0;
    options(data[1], &o, st);
    size -= 2;
    switch (data[0] % 3) {
    case 0:
        base64_round_trip(p, size);
        verify(p, size, &o);
        break;
    default:
        if (size <= 16384) /* keeps each run fast; the size limit is tested in mode 0 */
            signed_token(st, data[0] % 3 == 2, p, size, &o);
        break;
    }
    return 0;
}
