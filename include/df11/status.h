/* df11 status codes.
 *
 * Every fallible df11 function returns a df11_status: DF11_OK (0) on success, a negative
 * value on failure. df11_strerror() names the code; df11_last_error_detail() gives the
 * calling thread's most recent failure with context (a tensor name, an offset).
 * The library never prints and never exits.
 */
#ifndef DF11_STATUS_H
#define DF11_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the public entry points: the shared library exports these and nothing else. */
#if defined(__GNUC__)
#define DF11_API __attribute__((visibility("default")))
#else
#define DF11_API
#endif

typedef enum df11_status {
    DF11_OK = 0,
    DF11_ERR_INVALID_ARG = -1, /* a NULL or out-of-range argument */
    DF11_ERR_NO_MEMORY = -2,   /* host allocation failed */
    DF11_ERR_IO = -3,          /* open/read/write/rename failed (errno in detail) */
    DF11_ERR_NOT_DF11 = -4,    /* the file does not start with the df11 magic */
    DF11_ERR_VERSION = -5,     /* a df11 major version this library cannot read */
    DF11_ERR_TRUNCATED = -6,   /* the file ends before the data it describes */
    DF11_ERR_CORRUPT = -7,     /* an index or stream field is inconsistent */
    DF11_ERR_CHECKSUM = -8,    /* xxh3 of an index or group payload does not match */
    DF11_ERR_SAFETENSORS = -9, /* malformed safetensors header or index */
    DF11_ERR_DTYPE = -10,      /* unknown or unsupported dtype */
    DF11_ERR_OVERFLOW = -11,   /* a size computation would overflow */
    DF11_ERR_DUPLICATE = -12,  /* two tensors with one name */
    DF11_ERR_NOT_FOUND = -13,  /* no tensor / block / group of that name or index */
    DF11_ERR_RANGE = -14,      /* offsets past the end of the data, or overlapping */
    DF11_ERR_NO_DEVICE = -15,  /* the CUDA backend was asked for but there is no GPU */
    DF11_ERR_DEVICE = -16,     /* a CUDA runtime or cuBLAS call failed */
    /* The model's memory does not suffice: the GPU's on the CUDA backend, or
     * options.memory_limit on either backend (the detail names the shortfall). */
    DF11_ERR_DEVICE_MEMORY = -17,
    DF11_ERR_STATE = -18, /* call out of order: release without acquire, ... */
    DF11_ERR_BUSY = -19,  /* every arena slot is held (the detail says by what); release one */
    DF11_ERR_UNSUPPORTED = -20, /* valid but not supported by this build */
} df11_status;

/* A static, human-readable name for a status code ("checksum mismatch"). Never NULL. */
DF11_API const char *df11_strerror(df11_status status);

/* The calling thread's detail for its most recent failed df11 call, e.g.
 * "group 'layers.3': payload xxh3 0x12.. != 0x34..". Empty string if none. The pointer
 * stays valid until the next df11 call on this thread. */
DF11_API const char *df11_last_error_detail(void);

#ifdef __cplusplus
}
#endif
#endif
