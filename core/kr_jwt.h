/* kr_jwt.h: JWT (JWS compact serialization) verification for bearer tokens.
 *
 * A caller configures one or more keys, each pinned to exactly one algorithm (RFC 8725 3.1),
 * and verifies a received token against them: the token's "alg" only selects among those
 * keys, it never chooses how a key is used, so an HS256 token is never checked with an RSA
 * or EC key (the HS/RS confusion attack) and "none" is always refused.
 * Supported: HS256/384/512 (shared secret of at least the hash size, RFC 7518 3.2),
 * RS256/384/512 and PS256/384/512 (RSA >= 2048 bits, RFC 7518 3.3), ES256/384/512 (P-256,
 * P-384, P-521). Public keys come from a SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY") or an
 * X.509 certificate PEM. Every primitive is OpenSSL 3's; the only code of our own is the
 * strict base64url decoder, the JOSE -> DER conversion of ECDSA signatures and the claim checks.
 * Checked claims: exp, nbf (with a leeway), iat (type only), iss, aud. Policy, i.e. which
 * claims a route or hub requires, belongs to the caller (kr_auth / the Lua layer).
 * Error texts are static and log-safe: they never contain the token, a claim value or a key.
 * Owns its keys (EVP_PKEY, secret copies); calls OpenSSL libcrypto, cJSON and kr_json.
 * Thread-safe: keys are read-only once configured (set a kid before sharing a key) and
 * verification keeps no shared state.
 */
#ifndef KR_JWT_H
#define KR_JWT_H

#include "kr_common.h"

struct cJSON;

#define KR_JWT_DEFAULT_MAX_BYTES 8192

typedef struct kr_jwt_key_s kr_jwt_key_t; /* one configured key; its algorithm is pinned */

/* An HMAC key for alg "HS256", "HS384" or "HS512" (exact case). The secret is copied. It must
 * be at least as long as the hash output (32, 48 or 64 bytes; RFC 7518 3.2 "MUST"): shorter
 * secrets are refused because an HMAC key is not a password (RFC 8725 3.5). Returns 0 with
 * *out set, or KR_EINVAL with a message in err (NUL-terminated, truncated to errlen). */
int kr_jwt_key_hmac(kr_jwt_key_t **out, const char *alg, const void *secret, size_t len, char *err,
                    size_t errlen);

/* A public key for "RS256/384/512", "PS256/384/512" (RSA, at least 2048 bits) or "ES256"
 * (EC P-256), "ES384" (P-384), "ES512" (P-521), read from pem[0..len): a SubjectPublicKeyInfo
 * ("-----BEGIN PUBLIC KEY-----") or an X.509 certificate ("-----BEGIN CERTIFICATE-----"; its
 * validity dates and chain are not checked, only its key is used). The first PEM block is
 * used. The key type must match the algorithm family, else KR_EINVAL. PKCS#1 "RSA PUBLIC
 * KEY" blocks and private keys are refused. Returns 0 with *out set, or KR_EINVAL with err. */
int kr_jwt_key_pem(kr_jwt_key_t **out, const char *alg, const char *pem, size_t len, char *err,
                   size_t errlen);

/* Gives the key a "kid" (copied; NULL removes it). A key with a kid is only tried for tokens
 * whose header has no kid or the same kid; the kid never selects an algorithm or a key
 * outside the configured set (RFC 8725 3.10). */
void kr_jwt_key_set_kid(kr_jwt_key_t *k, const char *kid);

/* The key's pinned algorithm name ("HS256", ...). */
const char *kr_jwt_key_alg(const kr_jwt_key_t *k);

/* Whether alg names an algorithm this module can verify (exact case). */
int kr_jwt_alg_supported(const char *alg);

void kr_jwt_key_free(kr_jwt_key_t *k);

typedef struct kr_jwt_opts_s {
    kr_jwt_key_t *const *keys;    /* tried in order: only keys whose alg equals the token's "alg" */
    unsigned nkeys;               /* (and whose kid matches when both have one) */
    const char *issuer;           /* NULL: not checked; else "iss" must equal it exactly */
    const char *const *audiences; /* naudiences 0: not checked; else the token's "aud" */
    unsigned naudiences;          /* (string or array of strings) must contain one of them */
    int64_t leeway_s;       /* clock skew allowed for exp/nbf (negative counts as 0; the caller */
                            /* clamps to <= 60 by default policy) */
    size_t max_token_bytes; /* 0: KR_JWT_DEFAULT_MAX_BYTES; checked before any decoding */
    int64_t now_s;          /* 0: time(NULL) */
    int require_exp;        /* 1: a token without exp is refused */
} kr_jwt_opts_t;

/* Verifies token[0..len). Returns 0 with *claims the payload object (the caller frees it with
 * cJSON_Delete), or a negative code with *claims NULL and *err a static, log-safe message
 * that never contains the token:
 *   KR_EINVAL  bad call (NULL arguments, no keys): "no keys configured", "bad arguments"
 *   KR_ELIMIT  "token too large"
 *   KR_EPROTO  anything wrong with the token: "malformed token", "bad token header",
 *              "alg none is refused", "algorithm not accepted", "no key matches kid",
 *              "critical header not supported", "token type not accepted",
 *              "nested token not supported", "bad signature", "bad claims",
 *              "token has no expiry", "token expired", "token not yet valid",
 *              "wrong issuer", "wrong audience"
 * The signature is checked before the payload is decoded or parsed. Claims checks, in order:
 * exp/nbf/iat must be numbers when present; exp (now >= exp + leeway is expired), nbf
 * (now + leeway < nbf is not yet valid), iss, aud. A claim checked here that appears twice
 * in the payload, or a header member that appears twice, makes the token malformed (cJSON
 * keeps the first one; another parser might keep the last). */
int kr_jwt_verify(const char *token, size_t len, const kr_jwt_opts_t *o, struct cJSON **claims,
                  const char **err);

/* Strict base64url (RFC 4648 section 5, RFC 7515 section 2): no padding, no whitespace, no
 * characters outside [A-Za-z0-9_-], no length of 4n+1, and the unused trailing bits must be
 * zero (one canonical encoding per byte string). Writes at most len*3/4 bytes to out and
 * returns the count, or -1. Exposed for the tests and the fuzzer. */
long kr_base64url_decode(const char *in, size_t len, unsigned char *out);

#endif
