/* Uses only the installed public header and shared library. */
#include <df11.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    df11_file *f;
    if (df11_file_open("/nonexistent/model.df11", &f) != DF11_ERR_IO) return 1;
    if (strcmp(df11_strerror(DF11_ERR_CHECKSUM), "checksum mismatch") != 0) return 1;
    puts("installed df11 works");
    return 0;
}
