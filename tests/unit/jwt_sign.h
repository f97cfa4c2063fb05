/* jwt_sign.h: a test-only JWT signer on the OpenSSL APIs, shared by the unit tests
 * (test_jwt.c) and the fuzz target (tests/fuzz/fuzz_jwt.c), so that tokens are made at run time
 * and nothing is a fixed token that could go stale: base64url, and the signatures of every
 * algorithm kr_jwt verifies (HS*, RS*, PS* with a chosen salt length, ES* converted from DER
 * to JOSE r || s). Static inline functions in a header, as in kr_test.h; failures are
 * kr_test.h's ASSERTs (they abort, which a fuzz run reports too). Include it after kr_jwt.h.
 */
#ifndef KR_TEST_JWT_SIGN_H
#define KR_TEST_JWT_SIGN_H

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <string.h>

#include "kr_test.h"

/* base64url without padding, NUL-terminated; returns the length (without the NUL). out needs
 * 4 * n / 3 + 2 bytes. */
static inline size_t b64url_enc(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tbl[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = tbl[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

typedef struct signer_s {
    const char *alg;
    EVP_PKEY *priv;     /* RS/PS/ES */
    const void *secret; /* HS */
    size_t secret_len;
    int pss_salt; /* PS: 0 means the hash length, else RSA_PSS_SALTLEN_* or bytes */
} signer_t;

static const char *md_of(const char *alg)
{
    const char *bits = alg + 2;
    return strcmp(bits, "256") == 0 ? "SHA256" : strcmp(bits, "384") == 0 ? "SHA384" : "SHA512";
}

static inline size_t ec_coord(const char *alg)
{
    return strcmp(alg, "ES256") == 0 ? 32 : strcmp(alg, "ES384") == 0 ? 48 : 66;
}

/* DER ECDSA -> JOSE r || s. */
static inline size_t der_to_jose(const unsigned char *der, size_t len, size_t coord,
                                 unsigned char *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    ASSERT_NOT_NULL(es);
    ASSERT_EQ(BN_bn2binpad(ECDSA_SIG_get0_r(es), out, (int)coord), coord);
    ASSERT_EQ(BN_bn2binpad(ECDSA_SIG_get0_s(es), out + coord, (int)coord), coord);
    ECDSA_SIG_free(es);
    return 2 * coord;
}

/* Signs in[0..len) as s->alg does; returns the JOSE signature length. sig needs room for the
 * signature: 64 bytes for HS and ES256, the key's size for RS and PS (up to 1024). */
static inline size_t jwt_sign(const signer_t *s, const char *in, size_t len, unsigned char *sig)
{
    size_t slen = 1024;
    unsigned char der[1024];
    EVP_MD_CTX *mctx;
    EVP_PKEY_CTX *pctx = NULL;

    if (s->alg[0] == 'H') {
        ASSERT_NOT_NULL(EVP_Q_mac(NULL, "HMAC", NULL, md_of(s->alg), NULL, s->secret, s->secret_len,
                                  (const unsigned char *)in, len, sig, 64, &slen));
        return slen;
    }
    mctx = EVP_MD_CTX_new();
    ASSERT_EQ(EVP_DigestSignInit_ex(mctx, &pctx, md_of(s->alg), NULL, NULL, s->priv, NULL), 1);
    if (s->alg[0] == 'P') {
        ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        ASSERT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, s->pss_salt ? s->pss_salt
                                                                     : RSA_PSS_SALTLEN_DIGEST),
                  1);
    }
    ASSERT_EQ(
        EVP_DigestSign(mctx, s->alg[0] == 'E' ? der : sig, &slen, (const unsigned char *)in, len),
        1);
    EVP_MD_CTX_free(mctx);
    if (s->alg[0] == 'E')
        slen = der_to_jose(der, slen, ec_coord(s->alg), sig);
    return slen;
}

#endif
