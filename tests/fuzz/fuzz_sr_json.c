/* fuzz_sr_json.c: libFuzzer target for the SignalR JSON hub protocol codec (core/kr_sr_json.c).
 *
 * The input is a received byte stream: it is split with kr_sr_json_next_record, the first
 * record also goes through the handshake parser, and every record is parsed and disposed.
 * What a parse accepts is encoded again and must parse back to the same fields, and the JSON
 * string writer must turn each record into valid UTF-8 that cJSON reads back as a string.
 * Records are copied into exact-size heap blocks so ASan catches any read past their end.
 */
#include "kr_json.h"
#include "kr_sr_json.h"

#include <stdlib.h>

static void check(int cond)
{
    if (!cond)
        abort();
}

/* Whether s is a C string the writer passes through unchanged (valid UTF-8). */
static int plain(const char *s)
{
    return s == NULL || kr_utf8_valid(s, strlen(s));
}

static void parse_back(const kr_sbuf_t *sb, kr_sr_msg_t *m)
{
    size_t rec = 0;
    const char *err = NULL;
    check(kr_sr_json_next_record(kr_sbuf_data(sb), kr_sbuf_len(sb), &rec) == kr_sbuf_len(sb));
    check(kr_utf8_valid(kr_sbuf_data(sb), rec));
    check(kr_sr_json_parse(kr_sbuf_data(sb), rec, m, &err) == 0);
}

static int same(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Encodes what was parsed and checks the round trip. */
static void round_trip(const kr_sr_msg_t *m)
{
    kr_sbuf_t sb;
    kr_sr_msg_t back;
    char *json;

    kr_sbuf_init(&sb, 128);
    switch (m->type) {
    case KR_SR_INVOCATION:
    case KR_SR_STREAM_ITEM:
        json = cJSON_PrintUnformatted(m->type == KR_SR_INVOCATION ? m->arguments : m->item);
        if (json == NULL)
            break;
        if (m->type == KR_SR_INVOCATION)
            kr_sr_json_write_invocation_head(&sb, m->invocation_id, m->target);
        else
            kr_sr_json_write_stream_item_head(&sb, m->invocation_id);
        kr_sbuf_puts(&sb, json);
        kr_sr_json_write_tail(&sb);
        cJSON_free(json);
        if (!plain(m->invocation_id) || !plain(m->target) ||
            !kr_utf8_valid(kr_sbuf_data(&sb), kr_sbuf_len(&sb)))
            break; /* invalid bytes were replaced (or cJSON printed them raw) */
        parse_back(&sb, &back);
        check(back.type == m->type);
        check(same(back.invocation_id, m->invocation_id));
        if (m->type == KR_SR_INVOCATION)
            check(same(back.target, m->target));
        kr_sr_msg_dispose(&back);
        break;
    case KR_SR_COMPLETION:
        kr_sr_json_write_completion(&sb, m->invocation_id, NULL, 0, m->error);
        if (!plain(m->invocation_id) || !plain(m->error))
            break;
        parse_back(&sb, &back);
        check(back.type == KR_SR_COMPLETION);
        check(same(back.invocation_id, m->invocation_id));
        check(same(back.error, m->error));
        check((back.result != NULL) == (m->error == NULL));
        kr_sr_msg_dispose(&back);
        break;
    case KR_SR_CLOSE:
        kr_sr_json_write_close(&sb, m->error, m->allow_reconnect);
        if (!plain(m->error))
            break;
        parse_back(&sb, &back);
        check(back.type == KR_SR_CLOSE);
        check(same(back.error, m->error));
        check(back.allow_reconnect == m->allow_reconnect);
        kr_sr_msg_dispose(&back);
        break;
    case KR_SR_ACK:
    case KR_SR_SEQUENCE:
        if (m->type == KR_SR_ACK)
            kr_sr_json_write_ack(&sb, m->sequence_id);
        else
            kr_sr_json_write_sequence(&sb, m->sequence_id);
        parse_back(&sb, &back);
        check(back.type == m->type);
        check(back.sequence_id == m->sequence_id);
        kr_sr_msg_dispose(&back);
        break;
    default:
        break;
    }
    kr_sbuf_dispose(&sb);
}

/* The string writer: always valid UTF-8 and a single JSON string. */
static void check_string_writer(const char *rec, size_t len)
{
    kr_sbuf_t sb;
    cJSON *v;
    const char *end = NULL;

    kr_sbuf_init(&sb, len + 16);
    kr_json_write_string(&sb, rec, len);
    check(kr_utf8_valid(kr_sbuf_data(&sb), kr_sbuf_len(&sb)));
    check(memchr(kr_sbuf_data(&sb), KR_SR_RS, kr_sbuf_len(&sb)) == NULL);
    v = cJSON_ParseWithLengthOpts(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &end, 0);
    check(v != NULL && cJSON_IsString(v));
    check(end == kr_sbuf_data(&sb) + kr_sbuf_len(&sb));
    /* cJSON stops a string at \u0000; otherwise valid input reads back as it was. */
    if (memchr(rec, 0, len) == NULL && kr_utf8_valid(rec, len))
        check(strlen(v->valuestring) == len && memcmp(v->valuestring, rec, len) == 0);
    cJSON_Delete(v);
    kr_sbuf_dispose(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size, rec_len = 0, n;
    int first = 1;

    while ((n = kr_sr_json_next_record(p, left, &rec_len)) > 0) {
        char *rec = malloc(rec_len ? rec_len : 1);
        kr_sr_msg_t m;
        const char *err = NULL;

        check(n == rec_len + 1 && n <= left && p[rec_len] == KR_SR_RS);
        memcpy(rec, p, rec_len);
        if (first) {
            char proto[32];
            int version = 0;
            if (kr_sr_handshake_parse(rec, rec_len, proto, sizeof(proto), &version, &err) == 0)
                check(strlen(proto) < sizeof(proto));
            else
                check(err != NULL);
            first = 0;
        }
        if (kr_sr_json_parse(rec, rec_len, &m, &err) == 0) {
            check(m._root != NULL);
            round_trip(&m);
        } else {
            check(err != NULL && m._root == NULL);
        }
        kr_sr_msg_dispose(&m);
        if (rec_len <= 4096)
            check_string_writer(rec, rec_len);
        free(rec);
        p += n;
        left -= n;
    }
    check(left <= size && (left == 0 || memchr(p, KR_SR_RS, left) == NULL));
    return 0;
}
