/* kr_jwt.c: JWT (JWS compact) verification on OpenSSL 3 (see kr_jwt.h).
 *
 * Order of work for one token, cheapest and least trusting first: size limit, exactly three
 * non-empty parts, strict base64url of the header, header JSON (alg, crit, typ, cty, kid),
 * signature over "header.payload" with each configured key pinned to the header's alg, and
 * only then the payload JSON and its claims. Decoded parts share one scratch block sized from
 * the (already bounded) token length. OpenSSL errors raised while verifying are popped from
 * the thread's error queue again, so a refused token leaves nothing behind for the TLS code.
 */
#include "kr_jwt.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "kr_json.h"

/* Largest PEM text accepted as a key: a certificate with a 16384-bit RSA key is well below. */
#define MAX_PEM_BYTES (64 * 1024)

typedef enum { FAM_HS, FAM_RS, FAM_PS, FAM_ES } family_t;

typedef struct alg_s {
    const char *name;
    family_t family;
    const char *md;   /* OpenSSL digest name */
    size_t hash_len;  /* HS: signature length and minimum secret length */
    int curve_nid;    /* ES: the only curve the algorithm allows */
    size_t coord_len; /* ES: bytes of r and of s in the JOSE signature */
} alg_t;

/* RFC 7518 section 3.1. EdDSA (RFC 8037) is not here: no caller has asked for it yet. */
static const alg_t algs[] = {
    {"HS256", FAM_HS, "SHA256", 32, 0, 0},
    {"HS384", FAM_HS, "SHA384", 48, 0, 0},
    {"HS512", FAM_HS, "SHA512", 64, 0, 0},
    {"RS256", FAM_RS, "SHA256", 32, 0, 0},
    {"RS384", FAM_RS, "SHA384", 48, 0, 0},
    {"RS512", FAM_RS, "SHA512", 64, 0, 0},
    {"PS256", FAM_PS, "SHA256", 32, 0, 0},
    {"PS384", FAM_PS, "SHA384", 48, 0, 0},
    {"PS512", FAM_PS, "SHA512", 64, 0, 0},
    {"ES256", FAM_ES, "SHA256", 32, NID_X9_62_prime256v1, 32},
    {"ES384", FAM_ES, "SHA384", 48, NID_secp384r1, 48},
    {"ES512", FAM_ES, "SHA512", 64, NID_secp521r1, 66},
};

struct kr_jwt_key_s {
    const alg_t *alg;
    char *kid;
    EVP_MAC_CTX *hmac; /* HS: keyed once; each verification works on a duplicate */
    EVP_MD *md;        /* RS/PS/ES: fetched once rather than per verification */
    EVP_PKEY *pkey;    /* RS/PS/ES */
    size_t sig_len;    /* the one signature length this key can produce */
};

/* ---- keys ------------------------------------------------------------------------------------ */

static const alg_t *find_alg(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < KR_ARRAY_SIZE(algs); i++)
        if (strcmp(algs[i].name, name) == 0)
            return &algs[i];
    return NULL;
}

int kr_jwt_alg_supported(const char *alg)
{
    return find_alg(alg) != NULL;
}

static int key_error(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return KR_EINVAL;
}

/* An HMAC context keyed with secret and set to the algorithm's digest, or NULL. */
static EVP_MAC_CTX *hmac_template(const alg_t *a, const void *secret, size_t len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[2];

    EVP_MAC_free(mac); /* the context keeps its own reference */
    if (ctx == NULL)
        return NULL;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)a->md, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, secret, len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int kr_jwt_key_hmac(kr_jwt_key_t **out, const char *alg, const void *secret, size_t len, char *err,
                    size_t errlen)
{
    const alg_t *a = find_alg(alg);
    kr_jwt_key_t *k;
    EVP_MAC_CTX *ctx;

    *out = NULL;
    if (a == NULL || a->family != FAM_HS)
        return key_error(err, errlen, "an HMAC key takes alg HS256, HS384 or HS512");
    /* RFC 7518 3.2: a key of the same size as the hash output or larger MUST be used. */
    if (secret == NULL || len < a->hash_len)
        return key_error(err, errlen,
                         "secret too short (HS256 needs 32 bytes, HS384 48, HS512 64)");
    ERR_set_mark();
    ctx = hmac_template(a, secret, len);
    ERR_pop_to_mark();
    if (ctx == NULL)
        return key_error(err, errlen, "OpenSSL could not set up HMAC");
    k = kr_calloc(1, sizeof(*k));
    k->alg = a;
    k->hmac = ctx;
    k->sig_len = a->hash_len;
    *out = k;
    return 0;
}

/* No PEM we accept is encrypted; refusing a password keeps OpenSSL from prompting on a tty. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    KR_UNUSED(buf);
    KR_UNUSED(size);
    KR_UNUSED(rwflag);
    KR_UNUSED(u);
    return -1;
}

/* The first "PUBLIC KEY" block, else the key of the first certificate, else NULL. */
static EVP_PKEY *read_public_key(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey;
    X509 *cert;

    if (bio == NULL)
        return NULL;
    pkey = PEM_read_bio_PUBKEY(bio, NULL, no_password, NULL);
    if (pkey == NULL && BIO_reset(bio) == 1) {
        cert = PEM_read_bio_X509(bio, NULL, no_password, NULL);
        if (cert != NULL)
            pkey = X509_get_pubkey(cert);
        X509_free(cert);
    }
    BIO_free(bio);
    return pkey;
}

/* The NID of an EC key's named curve, or NID_undef (explicit curve parameters included: a
 * key that brings its own curve is refused). */
static int ec_curve_nid(const EVP_PKEY *pkey)
{
    char name[80];
    size_t nlen = 0;
    int nid;

    if (EVP_PKEY_get_group_name(pkey, name, sizeof(name), &nlen) != 1)
        return NID_undef;
    nid = OBJ_sn2nid(name);
    return nid != NID_undef ? nid : EC_curve_nist2nid(name);
}

/* NULL when pkey suits a, else why not. */
static const char *key_type_problem(const alg_t *a, EVP_PKEY *pkey)
{
    if (a->family == FAM_RS || a->family == FAM_PS) {
        if (!EVP_PKEY_is_a(pkey, "RSA"))
            return "the key is not an RSA key, as RS and PS algorithms need";
        /* RFC 7518 3.3 and 3.5: 2048 bits or larger MUST be used. */
        if (EVP_PKEY_get_bits(pkey) < 2048)
            return "RSA key shorter than 2048 bits";
        return NULL;
    }
    if (!EVP_PKEY_is_a(pkey, "EC"))
        return "the key is not an EC key, as ES algorithms need";
    if (ec_curve_nid(pkey) != a->curve_nid)
        return "wrong EC curve (ES256 needs P-256, ES384 P-384, ES512 P-521)";
    return NULL;
}

/* Whether OpenSSL's own public-key validation accepts pkey (an EC point on its curve, a
 * plausible RSA modulus and exponent). */
static int key_passes_check(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/* Builds the key once the PEM is read; takes pkey. */
static int pem_key_new(kr_jwt_key_t **out, const alg_t *a, EVP_PKEY *pkey, char *err, size_t errlen)
{
    const char *problem = key_type_problem(a, pkey);
    EVP_MD *md = NULL;
    kr_jwt_key_t *k;

    if (problem == NULL && !key_passes_check(pkey))
        problem = "the public key fails OpenSSL's validation";
    if (problem == NULL && (md = EVP_MD_fetch(NULL, a->md, NULL)) == NULL)
        problem = "OpenSSL has no digest for this algorithm";
    if (problem != NULL) {
        EVP_PKEY_free(pkey);
        return key_error(err, errlen, problem);
    }
    k = kr_calloc(1, sizeof(*k));
    k->alg = a;
    k->pkey = pkey;
    k->md = md;
    k->sig_len = a->family == FAM_ES ? 2 * a->coord_len : (size_t)EVP_PKEY_get_size(pkey);
    *out = k;
    return 0;
}

int kr_jwt_key_pem(kr_jwt_key_t **out, const char *alg, const char *pem, size_t len, char *err,
                   size_t errlen)
{
    const alg_t *a = find_alg(alg);
    EVP_PKEY *pkey;
    int rc;

    *out = NULL;
    if (a == NULL || a->family == FAM_HS)
        return key_error(err, errlen,
                         "a PEM key takes alg RS256/384/512, PS256/384/512 or ES256/384/512");
    if (pem == NULL || len == 0 || len > MAX_PEM_BYTES)
        return key_error(err, errlen, "no PEM text, or more than 64 KiB of it");
    ERR_set_mark();
    pkey = read_public_key(pem, len);
    if (pkey == NULL) {
        ERR_pop_to_mark();
        return key_error(err, errlen, "no PUBLIC KEY or CERTIFICATE PEM block could be read");
    }
    rc = pem_key_new(out, a, pkey, err, errlen);
    ERR_pop_to_mark();
    return rc;
}

void kr_jwt_key_set_kid(kr_jwt_key_t *k, const char *kid)
{
    kr_free(k->kid);
    k->kid = kid != NULL ? kr_strdup(kid) : NULL;
}

const char *kr_jwt_key_alg(const kr_jwt_key_t *k)
{
    return k->alg->name;
}

void kr_jwt_key_free(kr_jwt_key_t *k)
{
    if (k == NULL)
        return;
    EVP_MAC_CTX_free(k->hmac); /* OpenSSL cleanses the HMAC key material */
    EVP_MD_free(k->md);
    EVP_PKEY_free(k->pkey);
    kr_free(k->kid);
    kr_free(k);
}

/* ---- base64url ------------------------------------------------------------------------------- */

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long kr_base64url_decode(const char *in, size_t len, unsigned char *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    if (len % 4 == 1) /* 6 bits cannot end a byte string */
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = ((acc << 6) | (uint32_t)v) & 0xfff; /* at most 12 bits are ever pending */
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits (2 or 4) must be zero, or two encodings would decode to the same bytes:
     * a signature could then be altered without the token being refused. */
    if ((acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)n;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* cJSON stores strings NUL-terminated, so an embedded NUL (raw or as \u0000) would cut a
 * compared value short ("issuer\0anything" equal to "issuer"). cJSON also lets raw control
 * characters through inside strings, which RFC 8259 forbids. Refusing both, and invalid UTF-8,
 * keeps to RFC 7519's "UTF-8 JSON" and leaves no room between our reading and the issuer's. */
static int json_text_ok(const unsigned char *p, size_t n)
{
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 && (in_string || (p[i] != '\t' && p[i] != '\n' && p[i] != '\r')))
            return 0;
        if (p[i] == '"') {
            in_string = !in_string;
        } else if (p[i] == '\\' && i + 1 < n) {
            if (p[i + 1] == 'u' && i + 5 < n && memcmp(p + i + 2, "0000", 4) == 0)
                return 0;
            i++; /* the escaped character can neither end the string nor start an escape */
        }
    }
    return kr_utf8_valid((const char *)p, n);
}

static int is_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One JSON object filling p[0..n) (surrounding whitespace allowed), or NULL. */
static cJSON *parse_object(const unsigned char *p, size_t n)
{
    const char *end = NULL;
    cJSON *root;
    size_t off;

    if (n == 0 || !json_text_ok(p, n))
        return NULL;
    root = cJSON_ParseWithLengthOpts((const char *)p, n, &end, 0);
    if (root == NULL)
        return NULL;
    for (off = (size_t)(end - (const char *)p); off < n && is_json_space(p[off]); off++)
        ;
    if (off < n || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* The member called name (case-sensitive, unlike cJSON_GetObjectItem) in *out, NULL when
 * absent. -1 when it appears twice: we must not read one copy where another parser (the
 * issuer's, a proxy's) would read the other. */
static int member(const cJSON *obj, const char *name, const cJSON **out)
{
    const cJSON *found = NULL;
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        if (it->string == NULL || strcmp(it->string, name) != 0)
            continue;
        if (found != NULL)
            return -1;
        found = it;
    }
    *out = found;
    return 0;
}

/* ---- header ---------------------------------------------------------------------------------- */

/* RFC 8725 3.11: typ tells token kinds apart. Bearer access tokens come as plain JWTs or as
 * RFC 9068 "at+jwt"; other explicit types (logout+jwt, secevent+jwt, dpop+jwt, ...) are
 * tokens for another purpose and must not pass as bearer tokens. Media types compare
 * case-insensitively and may drop "application/" (RFC 7515 4.1.9). */
static int typ_accepted(const char *typ)
{
    static const char *const ok[] = {"JWT", "application/jwt", "at+jwt", "application/at+jwt"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(ok); i++)
        if (strcasecmp(typ, ok[i]) == 0)
            return 1;
    return 0;
}

typedef struct header_s {
    const alg_t *alg;
    const char *kid; /* NULL when absent; points into the header tree */
} header_t;

/* Reads and checks the protected header; 0 or KR_EPROTO with *err. */
static int check_header(const cJSON *h, header_t *out, const char **err)
{
    const cJSON *alg, *crit, *typ, *cty, *kid;

    if (member(h, "alg", &alg) || member(h, "crit", &crit) || member(h, "typ", &typ) ||
        member(h, "cty", &cty) || member(h, "kid", &kid))
        goto bad;
    if (!cJSON_IsString(alg) || (kid != NULL && !cJSON_IsString(kid)))
        goto bad;
    if (strcasecmp(alg->valuestring, "none") == 0) {
        *err = "alg none is refused";
        return KR_EPROTO;
    }
    out->alg = find_alg(alg->valuestring);
    if (out->alg == NULL) {
        *err = "algorithm not accepted";
        return KR_EPROTO;
    }
    /* We implement no extension, so any listed critical parameter is one we don't understand
     * (RFC 7515 4.1.11: the token MUST then be rejected). That includes "b64" (RFC 7797). */
    if (crit != NULL && !(cJSON_IsArray(crit) && cJSON_GetArraySize(crit) == 0)) {
        *err = "critical header not supported";
        return KR_EPROTO;
    }
    if (typ != NULL && !(cJSON_IsString(typ) && typ_accepted(typ->valuestring))) {
        *err = "token type not accepted";
        return KR_EPROTO;
    }
    /* cty is only meaningful for nested JWTs (RFC 7519 5.2), which we don't unwrap. */
    if (cty != NULL) {
        *err = "nested token not supported";
        return KR_EPROTO;
    }
    out->kid = kid != NULL ? kid->valuestring : NULL;
    return 0;
bad:
    *err = "bad token header";
    return KR_EPROTO;
}

/* ---- signatures ------------------------------------------------------------------------------ */

static int hmac_verify(const kr_jwt_key_t *k, const char *data, size_t dlen,
                       const unsigned char *sig, size_t slen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mlen = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(k->hmac);
    int ok = 0;

    if (ctx != NULL && EVP_MAC_update(ctx, (const unsigned char *)data, dlen) == 1 &&
        EVP_MAC_final(ctx, mac, &mlen, sizeof(mac)) == 1 && mlen == slen)
        ok = CRYPTO_memcmp(mac, sig, slen) == 0; /* constant time: libjwt CVE-2024-25189 */
    EVP_MAC_CTX_free(ctx);
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

/* JOSE ECDSA signatures are r || s, each exactly coord bytes (RFC 7518 3.4); OpenSSL wants
 * DER. Returns the DER (OPENSSL_free it) or NULL. r = 0 or s = 0 is refused here as well as
 * in OpenSSL: the "psychic signature" (CVE-2022-21449) is the one forgery a verifier that
 * forgets this check accepts. */
static unsigned char *jose_to_der(const unsigned char *sig, size_t coord, int *der_len)
{
    BIGNUM *r = BN_bin2bn(sig, (int)coord, NULL);
    BIGNUM *s = BN_bin2bn(sig + coord, (int)coord, NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char *der = NULL;

    if (r == NULL || s == NULL || es == NULL || BN_is_zero(r) || BN_is_zero(s) ||
        ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    *der_len = i2d_ECDSA_SIG(es, &der); /* es now owns r and s */
    ECDSA_SIG_free(es);
    if (*der_len <= 0) {
        OPENSSL_free(der);
        return NULL;
    }
    return der;
}

/* RFC 7518 3.5: MGF1 with the same hash, salt as long as the hash. */
static int set_pss(EVP_PKEY_CTX *pctx, const EVP_MD *md)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
}

static int pkey_verify(const kr_jwt_key_t *k, const char *data, size_t dlen,
                       const unsigned char *sig, size_t slen)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    int der_len = 0, ok = 0;

    if (mctx == NULL)
        return 0;
    if (k->alg->family == FAM_ES) {
        der = jose_to_der(sig, k->alg->coord_len, &der_len);
        if (der == NULL)
            goto done;
        sig = der;
        slen = (size_t)der_len;
    }
    if (EVP_DigestVerifyInit(mctx, &pctx, k->md, NULL, k->pkey) != 1)
        goto done;
    if (k->alg->family == FAM_PS && !set_pss(pctx, k->md))
        goto done;
    ok = EVP_DigestVerify(mctx, sig, slen, (const unsigned char *)data, dlen) == 1;
done:
    OPENSSL_free(der);
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Whether k verifies sig over data. The length is checked first: every algorithm here has
 * exactly one valid signature length per key. */
static int key_verify(const kr_jwt_key_t *k, const char *data, size_t dlen,
                      const unsigned char *sig, size_t slen)
{
    if (slen != k->sig_len)
        return 0;
    if (k->alg->family == FAM_HS)
        return hmac_verify(k, data, dlen, sig, slen);
    return pkey_verify(k, data, dlen, sig, slen);
}

/* Tries the keys pinned to the header's alg (and kid); 0 when one verifies. */
static int verify_signature(const kr_jwt_opts_t *o, const header_t *h, const char *data,
                            size_t dlen, const unsigned char *sig, size_t slen, const char **err)
{
    int alg_match = 0, tried = 0;

    for (unsigned i = 0; i < o->nkeys; i++) {
        const kr_jwt_key_t *k = o->keys[i];
        /* Pointer equality on the table entry: the key's alg IS the header's alg, exactly. */
        if (k == NULL || k->alg != h->alg)
            continue;
        alg_match = 1;
        if (k->kid != NULL && h->kid != NULL && strcmp(k->kid, h->kid) != 0)
            continue;
        tried = 1;
        if (key_verify(k, data, dlen, sig, slen))
            return 0;
    }
    *err = !alg_match ? "algorithm not accepted" : !tried ? "no key matches kid" : "bad signature";
    return KR_EPROTO;
}

/* ---- claims ---------------------------------------------------------------------------------- */

/* A NumericDate claim (RFC 7519 2: a JSON number, possibly fractional). -1 when present but
 * not a finite number, or duplicated; 0 otherwise, *v NAN when absent. */
static int time_claim(const cJSON *c, const char *name, double *v)
{
    const cJSON *m;
    *v = NAN;
    if (member(c, name, &m) != 0)
        return -1;
    if (m == NULL)
        return 0;
    if (!cJSON_IsNumber(m) || !isfinite(m->valuedouble))
        return -1;
    *v = m->valuedouble;
    return 0;
}

/* exp and nbf against the clock. Doubles: an int64 "now" is exact below 2^53 seconds, and a
 * huge exp cannot overflow anything. iat is only type-checked: a token issued "in the future"
 * by a skewed issuer clock is still one the issuer signed. */
static int check_times(const cJSON *c, const kr_jwt_opts_t *o, const char **err)
{
    double exp, nbf, iat;
    double now = (double)(o->now_s != 0 ? o->now_s : (int64_t)time(NULL));
    double leeway = o->leeway_s > 0 ? (double)o->leeway_s : 0.0;

    if (time_claim(c, "exp", &exp) || time_claim(c, "nbf", &nbf) || time_claim(c, "iat", &iat)) {
        *err = "bad claims";
        return KR_EPROTO;
    }
    if (isnan(exp) && o->require_exp) {
        *err = "token has no expiry";
        return KR_EPROTO;
    }
    /* RFC 7519 4.1.4: now MUST be before exp. */
    if (!isnan(exp) && now >= exp + leeway) {
        *err = "token expired";
        return KR_EPROTO;
    }
    /* RFC 7519 4.1.5: now MUST be after or equal to nbf. */
    if (!isnan(nbf) && now + leeway < nbf) {
        *err = "token not yet valid";
        return KR_EPROTO;
    }
    return 0;
}

static int check_issuer(const cJSON *c, const kr_jwt_opts_t *o, const char **err)
{
    const cJSON *iss;
    if (o->issuer == NULL)
        return 0;
    if (member(c, "iss", &iss) != 0) {
        *err = "bad claims";
        return KR_EPROTO;
    }
    if (!cJSON_IsString(iss) || strcmp(iss->valuestring, o->issuer) != 0) {
        *err = "wrong issuer";
        return KR_EPROTO;
    }
    return 0;
}

static int audience_wanted(const kr_jwt_opts_t *o, const char *aud)
{
    for (unsigned i = 0; i < o->naudiences; i++)
        if (o->audiences[i] != NULL && strcmp(o->audiences[i], aud) == 0)
            return 1;
    return 0;
}

/* RFC 7519 4.1.3: aud is one string or an array of strings; one must be ours. An array
 * holding anything but strings is malformed, even when a string in it matches. */
static int check_audience(const cJSON *c, const kr_jwt_opts_t *o, const char **err)
{
    const cJSON *aud, *it;
    int found = 0;

    if (o->naudiences == 0)
        return 0;
    if (member(c, "aud", &aud) != 0)
        goto bad;
    if (cJSON_IsString(aud)) {
        found = audience_wanted(o, aud->valuestring);
    } else if (cJSON_IsArray(aud)) {
        cJSON_ArrayForEach(it, aud)
        {
            if (!cJSON_IsString(it))
                goto bad;
            found = found || audience_wanted(o, it->valuestring);
        }
    }
    if (!found) {
        *err = "wrong audience";
        return KR_EPROTO;
    }
    return 0;
bad:
    *err = "bad claims";
    return KR_EPROTO;
}

static int check_claims(const cJSON *c, const kr_jwt_opts_t *o, const char **err)
{
    int rc = check_times(c, o, err);
    if (rc == 0)
        rc = check_issuer(c, o, err);
    if (rc == 0)
        rc = check_audience(c, o, err);
    return rc;
}

/* ---- verify ---------------------------------------------------------------------------------- */

/* The three parts of a compact JWS, as offsets into the token. */
typedef struct parts_s {
    size_t h_len;        /* header: token[0..h_len) */
    size_t p_off, p_len; /* payload */
    size_t s_off, s_len; /* signature */
} parts_t;

/* Exactly two dots; header and payload non-empty. An empty signature is refused later, after
 * the header, so that an "alg":"none" token is reported as such. */
static int split(const char *t, size_t len, parts_t *p)
{
    const char *d1 = memchr(t, '.', len), *d2;
    if (d1 == NULL)
        return -1;
    d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - t));
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - t)) != NULL)
        return -1;
    p->h_len = (size_t)(d1 - t);
    p->p_off = p->h_len + 1;
    p->p_len = (size_t)(d2 - d1) - 1;
    p->s_off = (size_t)(d2 - t) + 1;
    p->s_len = len - p->s_off;
    return p->h_len > 0 && p->p_len > 0 ? 0 : -1;
}

/* Decodes one part into scratch at *used and advances *used; NULL when not base64url. The
 * decoded bytes are followed by a NUL (cJSON never needs it, it's a belt for debuggers). */
static unsigned char *decode_part(const char *in, size_t len, unsigned char *scratch, size_t *used,
                                  size_t *out_len)
{
    unsigned char *out = scratch + *used;
    long n = kr_base64url_decode(in, len, out);
    if (n < 0)
        return NULL;
    out[n] = '\0';
    *used += (size_t)n + 1;
    *out_len = (size_t)n;
    return out;
}

static int bad_token(const char **err)
{
    *err = "malformed token";
    return KR_EPROTO;
}

/* Everything after the size check; scratch holds len + 3 bytes, enough for the three decoded
 * parts (3/4 of their text each) and their NULs. */
static int verify_parts(const char *token, size_t len, const kr_jwt_opts_t *o,
                        unsigned char *scratch, cJSON **claims, const char **err)
{
    parts_t p;
    header_t h = {0};
    cJSON *header = NULL, *payload = NULL;
    unsigned char *hdr, *sig, *pl;
    size_t used = 0, hdr_len = 0, sig_len = 0, pl_len = 0;
    int rc;

    if (split(token, len, &p) != 0)
        return bad_token(err);
    hdr = decode_part(token, p.h_len, scratch, &used, &hdr_len);
    sig = decode_part(token + p.s_off, p.s_len, scratch, &used, &sig_len);
    /* The payload's base64 is checked now, so a broken payload is "malformed", not hidden
     * behind a signature error; it is only parsed after the signature holds. */
    pl = decode_part(token + p.p_off, p.p_len, scratch, &used, &pl_len);
    if (hdr == NULL || sig == NULL || pl == NULL)
        return bad_token(err);
    if ((header = parse_object(hdr, hdr_len)) == NULL)
        return bad_token(err);
    rc = check_header(header, &h, err);
    if (rc == 0 && sig_len == 0)
        rc = bad_token(err);
    if (rc == 0)
        rc = verify_signature(o, &h, token, p.s_off - 1, sig, sig_len, err);
    cJSON_Delete(header); /* h.kid pointed into it: not used past here */
    if (rc != 0)
        return rc;
    if ((payload = parse_object(pl, pl_len)) == NULL)
        return bad_token(err);
    rc = check_claims(payload, o, err);
    if (rc != 0) {
        cJSON_Delete(payload);
        return rc;
    }
    *claims = payload;
    return 0;
}

int kr_jwt_verify(const char *token, size_t len, const kr_jwt_opts_t *o, cJSON **claims,
                  const char **err)
{
    const char *unused;
    size_t max;
    unsigned char *scratch;
    int rc;

    if (err == NULL)
        err = &unused;
    *err = NULL;
    if (claims == NULL || o == NULL || (token == NULL && len > 0)) {
        *err = "bad arguments";
        return KR_EINVAL;
    }
    *claims = NULL;
    if (o->keys == NULL || o->nkeys == 0) {
        *err = "no keys configured";
        return KR_EINVAL;
    }
    max = o->max_token_bytes != 0 ? o->max_token_bytes : KR_JWT_DEFAULT_MAX_BYTES;
    if (len > max) {
        *err = "token too large";
        return KR_ELIMIT;
    }
    if (len == 0)
        return bad_token(err);
    scratch = kr_malloc(len + 3);
    ERR_set_mark();
    rc = verify_parts(token, len, o, scratch, claims, err);
    ERR_pop_to_mark();
    kr_free(scratch);
    return rc;
}
