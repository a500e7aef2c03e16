/* df11: losslessly compressed BF16 weights for LLM inference. The whole public API. */
#ifndef DF11_H
#define DF11_H

#include "df11/compress.h"
#include "df11/file.h"
#include "df11/runtime.h"
#include "df11/status.h"

#define DF11_VERSION_STRING "0.1.0"

#endif
