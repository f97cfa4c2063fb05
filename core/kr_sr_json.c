/* kr_sr_json.c: the SignalR JSON hub protocol codec (see kr_sr_json.h).
 *
 * Decode parses the record with cJSON, checks only whitespace follows (require_null_terminated
 * is 0 on purpose: cJSON 1.7.15 then wants a NUL inside the given length, which received
 * bytes do not have), then validates the properties it knows and points the message's fields
 * into the tree. Encode writes fixed text with kr_sbuf_* and strings with kr_json_write_string.
 */
#include "kr_sr_json.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>

#include "kr_json.h"

/* Largest magnitude a double holds exactly: beyond it an integer sequenceId would be rounded. */
#define SEQ_LIMIT 9007199254740992.0 /* 2^53 */

size_t kr_sr_json_next_record(const char *data, size_t len, size_t *rec_len)
{
    const char *rs;
    if (len == 0)
        return 0;
    rs = memchr(data, KR_SR_RS, len);
    if (rs == NULL)
        return 0;
    *rec_len = (size_t)(rs - data);
    return *rec_len + 1;
}

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One JSON value filling data[0..len) (surrounding whitespace allowed), or NULL. */
static cJSON *parse_whole(const char *data, size_t len)
{
    const char *end = NULL;
    cJSON *root;
    size_t off;

    if (len == 0)
        return NULL;
    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (root == NULL)
        return NULL;
    for (off = (size_t)(end - data); off < len && is_json_space(data[off]); off++)
        ;
    if (off < len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Whether d is a whole number (every finite double of magnitude 2^53 or more is one). */
static int is_integral(double d)
{
    if (!(d > -SEQ_LIMIT && d < SEQ_LIMIT))
        return isfinite(d);
    return (double)(int64_t)d == d;
}

/* An integral number within [lo, hi] (|lo|, |hi| <= 2^53), stored in *out. */
static int get_integer(const cJSON *item, double lo, double hi, int64_t *out)
{
    double d;
    if (!cJSON_IsNumber(item))
        return -1;
    d = item->valuedouble;
    if (!(d >= lo && d <= hi) || !is_integral(d)) /* the range test is also false for NaN */
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* Optional string property: 0 with *out NULL when absent or null, 0 with the string, or -1. */
static int get_opt_string(const cJSON *obj, const char *name, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = NULL;
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return -1;
    *out = item->valuestring;
    return 0;
}

static int is_string_array(const cJSON *arr)
{
    const cJSON *c;
    if (!cJSON_IsArray(arr))
        return 0;
    cJSON_ArrayForEach(c, arr)
    {
        if (!cJSON_IsString(c))
            return 0;
    }
    return 1;
}

static int is_string_object(const cJSON *obj)
{
    const cJSON *c;
    if (!cJSON_IsObject(obj))
        return 0;
    cJSON_ArrayForEach(c, obj)
    {
        if (!cJSON_IsString(c))
            return 0;
    }
    return 1;
}

/* Points m->stream_ids at the strings of arr (one kr_malloc'd block of pointers). */
static int copy_stream_ids(const cJSON *arr, kr_sr_msg_t *m)
{
    int n = cJSON_GetArraySize(arr);
    if (n <= 0)
        return 0;
    if (n > 1024)
        return -1;
    const char **ids = kr_malloc((size_t)n * sizeof(*ids));
    const cJSON *c;
    unsigned i = 0;
    cJSON_ArrayForEach(c, arr) ids[i++] = c->valuestring;
    m->stream_ids = ids;
    m->nstream_ids = i;
    m->_strings = (void *)ids;
    return 0;
}

/* The checks on properties that do not depend on the message type; sets the fields. */
static const char *read_common(const cJSON *root, kr_sr_msg_t *m)
{
    const cJSON *item;
    int64_t v;

    if (get_opt_string(root, "invocationId", &m->invocation_id) != 0)
        return "\"invocationId\" is not a string";
    if (get_opt_string(root, "target", &m->target) != 0)
        return "\"target\" is not a string";
    if (get_opt_string(root, "error", &m->error) != 0)
        return "\"error\" is not a string";
    item = cJSON_GetObjectItemCaseSensitive(root, "allowReconnect");
    if (item != NULL) {
        if (!cJSON_IsBool(item))
            return "\"allowReconnect\" is not a boolean";
        m->allow_reconnect = cJSON_IsTrue(item) ? 1 : 0;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "streamIds");
    if (item != NULL && !cJSON_IsNull(item)) {
        if (!is_string_array(item))
            return "\"streamIds\" is not an array of strings";
        if (copy_stream_ids(item, m) != 0)
            return "\"streamIds\" is too long";
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "headers");
    if (item != NULL && !is_string_object(item))
        return "\"headers\" is not an object of strings";
    item = cJSON_GetObjectItemCaseSensitive(root, "sequenceId");
    if (item != NULL) {
        if (!cJSON_IsNumber(item) || !is_integral(item->valuedouble))
            return "\"sequenceId\" is not an integer";
        if (get_integer(item, -SEQ_LIMIT, SEQ_LIMIT, &v) != 0)
            return "\"sequenceId\" is out of range";
        m->sequence_id = v;
    }
    return NULL;
}

/* Required invocationId: present and non-empty. */
static const char *need_id(const kr_sr_msg_t *m)
{
    if (m->invocation_id == NULL)
        return "missing \"invocationId\"";
    if (m->invocation_id[0] == '\0')
        return "\"invocationId\" is empty";
    return NULL;
}

static const char *read_invocation(const cJSON *root, kr_sr_msg_t *m)
{
    const cJSON *args;
    if (m->target == NULL)
        return "missing \"target\"";
    if (m->target[0] == '\0')
        return "\"target\" is empty";
    args = cJSON_GetObjectItemCaseSensitive(root, "arguments");
    if (args == NULL)
        return "missing \"arguments\"";
    if (!cJSON_IsArray(args))
        return "\"arguments\" is not an array";
    m->arguments = args;
    return NULL;
}

static const char *read_message(const cJSON *root, kr_sr_msg_t *m)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const char *e;
    int64_t t;

    if (type == NULL)
        return "missing \"type\"";
    if (get_integer(type, (double)INT_MIN, (double)INT_MAX, &t) != 0)
        return "\"type\" is not an integer";
    m->type = (int)t;
    e = read_common(root, m);
    if (e != NULL)
        return e;

    switch (m->type) {
    case KR_SR_INVOCATION:
        if (m->invocation_id != NULL && m->invocation_id[0] == '\0')
            m->invocation_id = NULL; /* no id to answer: fire-and-forget */
        return read_invocation(root, m);
    case KR_SR_STREAM_INVOCATION:
        if ((e = need_id(m)) != NULL)
            return e;
        return read_invocation(root, m);
    case KR_SR_STREAM_ITEM:
        if ((e = need_id(m)) != NULL)
            return e;
        m->item = cJSON_GetObjectItemCaseSensitive(root, "item");
        if (m->item == NULL)
            return "missing \"item\"";
        return NULL;
    case KR_SR_COMPLETION:
        if ((e = need_id(m)) != NULL)
            return e;
        m->result = cJSON_GetObjectItemCaseSensitive(root, "result");
        if (m->result != NULL && m->error != NULL)
            return "completion has both \"result\" and \"error\"";
        return NULL;
    case KR_SR_CANCEL_INVOCATION:
        return need_id(m);
    case KR_SR_PING:
    case KR_SR_CLOSE:
        return NULL;
    case KR_SR_ACK:
    case KR_SR_SEQUENCE:
        if (cJSON_GetObjectItemCaseSensitive(root, "sequenceId") == NULL)
            return "missing \"sequenceId\"";
        return NULL;
    default:
        return NULL;
    }
}

int kr_sr_json_parse(const char *data, size_t len, kr_sr_msg_t *out, const char **err)
{
    cJSON *root;
    const char *e;

    memset(out, 0, sizeof(*out));
    *err = NULL;
    /* Strings with "\u0000" keep it as C0 80 in the tree (kr_json_nul_protect); whoever
     * reads a string value restores the NULs. */
    size_t plen = len;
    char *protected_copy = kr_json_nul_protect(data, &plen);
    root = parse_whole(protected_copy ? protected_copy : data, plen);
    kr_free(protected_copy);
    if (root == NULL) {
        *err = "message is not valid JSON";
        return KR_EPROTO;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *err = "message is not a JSON object";
        return KR_EPROTO;
    }
    e = read_message(root, out);
    if (e != NULL) {
        cJSON_Delete(root);
        kr_free(out->_strings);
        memset(out, 0, sizeof(*out));
        *err = e;
        return KR_EPROTO;
    }
    if (out->type < KR_SR_INVOCATION || out->type > KR_SR_SEQUENCE) {
        /* Unknown type: only the number is meaningful. */
        int type = out->type;
        kr_free(out->_strings);
        memset(out, 0, sizeof(*out));
        out->type = type;
    }
    out->protocol = KR_SR_PROTO_JSON;
    out->has_result = out->result != NULL;
    out->_root = root;
    return 0;
}

int kr_sr_handshake_parse(const char *data, size_t len, char *protocol, size_t protocol_len,
                          int *version, const char **err)
{
    cJSON *root = parse_whole(data, len);
    const cJSON *item;
    int64_t v;
    size_t n;

    *err = NULL;
    if (root == NULL) {
        *err = "handshake is not valid JSON";
        return KR_EPROTO;
    }
    if (!cJSON_IsObject(root)) {
        *err = "handshake is not a JSON object";
        goto fail;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "protocol");
    if (item == NULL || cJSON_IsNull(item)) {
        *err = "missing \"protocol\"";
        goto fail;
    }
    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        *err = "\"protocol\" is not a string";
        goto fail;
    }
    if (protocol_len > 0) {
        n = strlen(item->valuestring);
        if (n > protocol_len - 1)
            n = protocol_len - 1;
        memcpy(protocol, item->valuestring, n);
        protocol[n] = '\0';
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (item == NULL || cJSON_IsNull(item)) {
        *err = "missing \"version\"";
        goto fail;
    }
    if (get_integer(item, (double)INT_MIN, (double)INT_MAX, &v) != 0) {
        *err = "\"version\" is not an integer";
        goto fail;
    }
    *version = (int)v;
    cJSON_Delete(root);
    return 0;

fail:
    cJSON_Delete(root);
    return KR_EPROTO;
}

/* ---- encoders -------------------------------------------------------------------------- */

static void put_str(kr_sbuf_t *sb, const char *s)
{
    kr_json_write_string(sb, s, strlen(s));
}

static void put_lit(kr_sbuf_t *sb, const char *lit)
{
    kr_sbuf_append(sb, lit, strlen(lit));
}

static void put_end(kr_sbuf_t *sb)
{
    kr_sbuf_append(sb, "}\x1e", 2);
}

void kr_sr_json_write_handshake_ok(kr_sbuf_t *sb)
{
    kr_sbuf_append(sb, "{}\x1e", 3);
}

void kr_sr_json_write_handshake_error(kr_sbuf_t *sb, const char *error)
{
    put_lit(sb, "{\"error\":");
    put_str(sb, error ? error : "");
    put_end(sb);
}

void kr_sr_json_write_ping(kr_sbuf_t *sb)
{
    put_lit(sb, "{\"type\":6}\x1e");
}

void kr_sr_json_write_close(kr_sbuf_t *sb, const char *error, int allow_reconnect)
{
    put_lit(sb, "{\"type\":7");
    if (error != NULL) {
        put_lit(sb, ",\"error\":");
        put_str(sb, error);
    }
    if (allow_reconnect)
        put_lit(sb, ",\"allowReconnect\":true");
    put_end(sb);
}

static void completion_head(kr_sbuf_t *sb, const char *invocation_id)
{
    KR_ASSERT(invocation_id != NULL);
    put_lit(sb, "{\"type\":3,\"invocationId\":");
    put_str(sb, invocation_id);
}

void kr_sr_json_write_completion(kr_sbuf_t *sb, const char *invocation_id, const char *result_json,
                                 size_t result_len, const char *error)
{
    completion_head(sb, invocation_id);
    if (error != NULL) {
        put_lit(sb, ",\"error\":");
        put_str(sb, error);
    } else if (result_json == NULL || result_len == 0) {
        put_lit(sb, ",\"result\":null");
    } else {
        put_lit(sb, ",\"result\":");
        kr_sbuf_append(sb, result_json, result_len);
    }
    put_end(sb);
}

void kr_sr_json_write_completion_void(kr_sbuf_t *sb, const char *invocation_id)
{
    completion_head(sb, invocation_id);
    put_lit(sb, ",\"result\":null");
    put_end(sb);
}

void kr_sr_json_write_completion_empty(kr_sbuf_t *sb, const char *invocation_id)
{
    completion_head(sb, invocation_id);
    put_end(sb);
}

void kr_sr_json_write_invocation_head(kr_sbuf_t *sb, const char *invocation_id, const char *target)
{
    KR_ASSERT(target != NULL);
    put_lit(sb, "{\"type\":1,");
    if (invocation_id != NULL && invocation_id[0] != '\0') {
        put_lit(sb, "\"invocationId\":");
        put_str(sb, invocation_id);
        kr_sbuf_putc(sb, ',');
    }
    put_lit(sb, "\"target\":");
    put_str(sb, target);
    put_lit(sb, ",\"arguments\":");
}

void kr_sr_json_write_stream_item_head(kr_sbuf_t *sb, const char *invocation_id)
{
    KR_ASSERT(invocation_id != NULL);
    put_lit(sb, "{\"type\":2,\"invocationId\":");
    put_str(sb, invocation_id);
    put_lit(sb, ",\"item\":");
}

void kr_sr_json_write_tail(kr_sbuf_t *sb)
{
    put_end(sb);
}

void kr_sr_json_write_ack(kr_sbuf_t *sb, int64_t seq)
{
    kr_sbuf_printf(sb, "{\"type\":8,\"sequenceId\":%" PRId64 "}\x1e", seq);
}

void kr_sr_json_write_sequence(kr_sbuf_t *sb, int64_t seq)
{
    kr_sbuf_printf(sb, "{\"type\":9,\"sequenceId\":%" PRId64 "}\x1e", seq);
}
