/* stub_open.c - weak fallbacks until a format's loader is linked in. */
#include "model_internal.h"
__attribute__((weak)) int sks__open_safetensors(const char *p, sks_model **o) { *o = NULL; return sks_fail(SKS_EUNSUPPORTED, "%s: safetensors loader not built", p); }
__attribute__((weak)) int sks__open_gguf(const char *p, sks_model **o) { *o = NULL; return sks_fail(SKS_EUNSUPPORTED, "%s: GGUF loader not built", p); }
__attribute__((weak)) int sks__open_llama2c(const char *p, sks_model **o) { *o = NULL; return sks_fail(SKS_EUNSUPPORTED, "%s: llama2.c loader not built", p); }
