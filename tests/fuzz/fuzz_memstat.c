/* Fuzz target: df11i_memstat_page_read, the reader of the shared-memory page a running model
 * publishes (runtime/memstat.h). Any process of the user can write /dev/shm/df11-*, so the
 * page is outside input. The input is the mapped page (in an 8-byte aligned buffer of
 * exactly the input's size, as mmap would give it).
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the result is 0, or -1 with a non-empty one-line reason that fits `why` (also when
 *    `why` is 4 bytes or NULL);
 *  - 0 gives what the header promises: the magic and version, DF11_MEMSTAT_MIN_SIZE <= size
 *    <= the input, path NUL-terminated (any other bytes: a path is the publisher's to
 *    choose, and df11-memstat escapes it when printing), backend NUL-terminated printable
 *    ASCII, n_groups at
 *    most DF11_MEMSTAT_MAX_GROUPS, arena_slots at most DF11_MEMSTAT_SLOTS, slot states
 *    0..2, finite times, and the bytes past the writer's size zero. */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "runtime/memstat.h"

/* NUL-terminated within `cap`; with `printable`, ASCII 0x20..0x7e before the NUL. */
static void check_text(const char *s, size_t cap, int printable, const char *what)
{
    const char *end = memchr(s, '\0', cap);
    FUZZ_CHECK(end != NULL, "%s not NUL-terminated", what);
    for (const char *p = s; printable && p < end; p++)
        FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e, "%s has byte 0x%02x", what, (unsigned char)*p);
}

static void check_why(const char *why, size_t len)
{
    FUZZ_CHECK(memchr(why, '\0', len) != NULL, "reason not terminated in %zu bytes", len);
    FUZZ_CHECK(len < 2 || why[0] != '\0', "failure without a reason");
    FUZZ_CHECK(strchr(why, '\n') == NULL, "reason is not one line");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void *page = malloc(size ? size : 1); /* malloc is 16-byte aligned */
    if (!page) return 0;
    memcpy(page, data, size);
    df11i_memstat_page out;
    char why[256];
    memset(why, 0, sizeof why);
    int r = df11i_memstat_page_read(page, size, &out, why, sizeof why);
    FUZZ_CHECK(r == 0 || r == -1, "returned %d", r);
    if (r != 0) {
        check_why(why, sizeof why);
    } else {
        FUZZ_CHECK(out.magic == DF11_MEMSTAT_MAGIC && out.version == DF11_MEMSTAT_VERSION,
                   "magic %llx version %u", (unsigned long long)out.magic, out.version);
        FUZZ_CHECK(out.size >= DF11_MEMSTAT_MIN_SIZE && out.size <= size, "size %u of %zu",
                   out.size, size);
        check_text(out.path, sizeof out.path, 0, "path");
        check_text(out.backend, sizeof out.backend, 1, "backend");
        FUZZ_CHECK(out.n_groups <= DF11_MEMSTAT_MAX_GROUPS, "%u groups", out.n_groups);
        FUZZ_CHECK(out.arena_slots <= DF11_MEMSTAT_SLOTS, "%u slots", out.arena_slots);
        for (int i = 0; i < DF11_MEMSTAT_SLOTS; i++)
            FUZZ_CHECK(out.slot_state[i] <= 2, "slot %d state %u", i, out.slot_state[i]);
        FUZZ_CHECK(isfinite(out.decode_ms) && isfinite(out.open_ms), "times %g %g", out.decode_ms,
                   out.open_ms);
        for (size_t i = out.size; i < sizeof out; i++)
            FUZZ_CHECK(((const uint8_t *)&out)[i] == 0, "byte %zu past the writer's size %u", i,
                       out.size);
    }
    char *tiny = malloc(4); /* on the heap, so ASan sees a reason written past it */
    if (tiny) {
        if (df11i_memstat_page_read(page, size, &out, tiny, 4) != 0) check_why(tiny, 4);
        free(tiny);
    }
    FUZZ_CHECK(df11i_memstat_page_read(page, size, &out, NULL, 0) == r,
               "verdict changed without why");
    free(page);
    return 0;
}
