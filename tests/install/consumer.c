/* Uses only the installed public header and library. The calls reach the runtime, its
 * backends and (in a CUDA build) the CUDA objects, so that a static link pulls them in:
 * df11_convert references the conversion kernel, df11_model_open the CUDA backend.
 * `consumer cuda`: this df11 has the CUDA backend (linked into libdf11.a, or
 * libdf11-cuda.so installed beside libdf11.so), so asking for it fails at most for want of
 * a device, never of the library; without the argument it is a build without CUDA. */
#include <df11.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const int cuda = argc > 1 && strcmp(argv[1], "cuda") == 0;
    df11_file *f;
    if (df11_file_open("/nonexistent/model.df11", &f) != DF11_ERR_IO) return 1;
    if (strcmp(df11_strerror(DF11_ERR_CHECKSUM), "checksum mismatch") != 0) return 1;
    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = DF11_BACKEND_HOST;
    df11_model *m = NULL;
    if (df11_model_open("/nonexistent/model.df11", &opt, &m) != DF11_ERR_IO || m) return 1;
    opt.backend = DF11_BACKEND_CUDA;
    const df11_status s = df11_model_open("/nonexistent/model.df11", &opt, &m);
    if (cuda ? (s != DF11_ERR_IO && s != DF11_ERR_NO_DEVICE) ||
                   strstr(df11_last_error_detail(), "did not load")
             : s != DF11_ERR_UNSUPPORTED) {
        fprintf(stderr, "consumer: CUDA backend: %s (%s)\n", df11_strerror(s),
                df11_last_error_detail());
        return 1;
    }
    const uint16_t one_bf16 = 0x3F80; /* 1.0 */
    float one = 0;
    if (df11_convert(DF11_BACKEND_HOST, &one_bf16, DF11_DTYPE_BF16, &one, DF11_DTYPE_F32, 1,
                     NULL) != DF11_OK ||
        one != 1.0f)
        return 1;
    puts("installed df11 works");
    return 0;
}
