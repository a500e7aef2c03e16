/* Uses only the installed public header and library. The calls reach the runtime, its
 * backends and (in a CUDA build) the CUDA objects, so that a static link pulls them in:
 * df11_convert references the conversion kernel, df11_model_open the CUDA backend. */
#include <df11.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    df11_file *f;
    if (df11_file_open("/nonexistent/model.df11", &f) != DF11_ERR_IO) return 1;
    if (strcmp(df11_strerror(DF11_ERR_CHECKSUM), "checksum mismatch") != 0) return 1;
    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = DF11_BACKEND_HOST;
    df11_model *m = NULL;
    if (df11_model_open("/nonexistent/model.df11", &opt, &m) != DF11_ERR_IO || m) return 1;
    const uint16_t one_bf16 = 0x3F80; /* 1.0 */
    float one = 0;
    if (df11_convert(DF11_BACKEND_HOST, &one_bf16, DF11_DTYPE_BF16, &one, DF11_DTYPE_F32, 1,
                     NULL) != DF11_OK ||
        one != 1.0f)
        return 1;
    puts("installed df11 works");
    return 0;
}
