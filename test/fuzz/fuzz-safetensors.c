/* fuzz-safetensors.c - libFuzzer target for the safetensors header parser and the
 * config.json reader (the two JSON entry points of the loaders).
 * Input: the bytes of a .safetensors image. The same bytes, after the 8-byte length,
 * are also fed to the config parser, so both grammars are exercised. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loaders/formats_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sks_log_set_level(-1);
    sks__st_header h;
    if (sks__st_parse(data, size, "fuzz.safetensors", &h) == 0) {
        /* a parse that succeeds must describe spans inside the data section */
        for (size_t i = 0; i < h.n; i++)
            if (h.e[i].end > h.data_size || h.e[i].begin > h.e[i].end || h.data_off + h.data_size != size)
                __builtin_trap();
        sks__st_header_free(&h);
    }
    if (size > 8) {
        sks_arch a;
        memset(&a, 0, sizeof a);
        if (sks__config_parse((const char *)data + 8, size - 8, "fuzz/config.json", &a) == 0 &&
            sks_arch_validate(&a) != 0)
            __builtin_trap(); /* an accepted config is a valid architecture */
    }
    return 0;
}
