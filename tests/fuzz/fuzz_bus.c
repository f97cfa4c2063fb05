/* fuzz_bus.c: libFuzzer target for the backplane's inter-server message (core/kr_bus.c), which
 * a server parses from the bytes Redis hands it: peer bytes. Decoding must never read past the
 * input, and whatever it accepts must encode back to exactly the same bytes (one canonical
 * form: nothing in an accepted message is ignored). */
#include "kr_bus.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kr_bus_msg_t m;
    if (kr_bus_msg_decode(data, size, &m) != 0)
        return 0;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, size);
    if (kr_bus_msg_encode(&m, &sb) != 0 || kr_sbuf_len(&sb) != size ||
        memcmp(kr_sbuf_data(&sb), data, size) != 0)
        abort();
    /* the records a receiver frames for its clients */
    if (m.json_len < 2 || m.json[m.json_len - 1] != 0x1e || m.mp_len < 2)
        abort();
    kr_sbuf_dispose(&sb);
    return 0;
}
