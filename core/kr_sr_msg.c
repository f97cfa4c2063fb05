/* kr_sr_msg.c: ownership and protocol-neutral accessors of parsed hub messages (kr_sr_msg.h). */
#include "kr_sr_msg.h"

#include <msgpack.h>

void kr_sr_msg_dispose(kr_sr_msg_t *m)
{
    cJSON_Delete(m->_root); /* NULL is ignored */
    if (m->_zone != NULL)
        msgpack_zone_free(m->_zone);
    kr_free(m->_strings);
    memset(m, 0, sizeof(*m));
}

void kr_sr_msg_move(kr_sr_msg_t *dst, kr_sr_msg_t *src)
{
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

unsigned kr_sr_msg_argc(const kr_sr_msg_t *m)
{
    if (m->protocol == KR_SR_PROTO_MSGPACK)
        return m->mp_arguments != NULL && m->mp_arguments->type == MSGPACK_OBJECT_ARRAY
                   ? m->mp_arguments->via.array.size
                   : 0;
    int n = m->arguments != NULL ? cJSON_GetArraySize(m->arguments) : 0;
    return n > 0 ? (unsigned)n : 0;
}

int kr_sr_msg_arg_string(const kr_sr_msg_t *m, unsigned i, const char **s, size_t *len)
{
    if (i >= kr_sr_msg_argc(m))
        return 0;
    if (m->protocol == KR_SR_PROTO_MSGPACK) {
        const msgpack_object *o = &m->mp_arguments->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR)
            return 0;
        *s = o->via.str.size > 0 ? o->via.str.ptr : ""; /* msgpack-c leaves "" as NULL */
        *len = o->via.str.size;
        return 1;
    }
    const cJSON *a = cJSON_GetArrayItem(m->arguments, (int)i);
    if (!cJSON_IsString(a) || a->valuestring == NULL)
        return 0;
    *s = a->valuestring;
    *len = strlen(a->valuestring);
    return 1;
}
