/* On-disk layout of .df11 version 2 (docs/FORMAT.md): sizes and field offsets. Readers and
 * writers go through these constants and the df11i_ld / df11i_st helpers, never through
 * packed structs, so the layout is exactly what the document says on every compiler. */
#ifndef DF11_LOADER_FORMAT_H
#define DF11_LOADER_FORMAT_H

#define DF11_MAGIC "DF11\x89\r\n\x1a"
/* 2: chunk streams interleave the lanes' full words in refill order (1 concatenated
 * the lanes' bit strings; its files are rejected: recompress them). */
#define DF11_VERSION_MAJOR 2
/* Minor 1 adds codec 2 (EXP_FIXED), minor 2 codec 3 (EXP_FIXED8); a file is written with
 * the lowest minor whose codecs it uses, so that older readers keep opening everything
 * they can decode. */
#define DF11_VERSION_MINOR 2
#define DF11_VERSION_MINOR_FIXED 1
#define DF11_VERSION_MINOR_HUFFMAN_ONLY 0

#define DF11_HEADER_SIZE 128
#define DF11_GROUP_RECORD 64
#define DF11_TENSOR_RECORD 160
#define DF11_PAYLOAD_ALIGN 4096
#define DF11_SECTION_ALIGN 16
#define DF11_DECODED_ALIGN 256

/* file header */
enum {
    HDR_MAGIC = 0,
    HDR_VERSION_MAJOR = 8,
    HDR_VERSION_MINOR = 10,
    HDR_HEADER_SIZE = 12,
    HDR_N_GROUPS = 16,
    HDR_N_TENSORS = 20,
    HDR_GROUPS_OFFSET = 24,
    HDR_TENSORS_OFFSET = 32,
    HDR_STRINGS_OFFSET = 40,
    HDR_STRINGS_SIZE = 48,
    HDR_METADATA_OFFSET = 56,
    HDR_METADATA_SIZE = 64,
    HDR_INDEX_END = 72,
    HDR_FILE_SIZE = 80,
    HDR_INDEX_XXH3 = 120,
};
/* group record */
enum {
    GRP_NAME_OFFSET = 0,
    GRP_NAME_LEN = 4,
    GRP_LAYER = 8,
    GRP_FIRST_TENSOR = 12,
    GRP_N_TENSORS = 16,
    GRP_FLAGS = 20,
    GRP_PAYLOAD_OFFSET = 24,
    GRP_PAYLOAD_SIZE = 32,
    GRP_DECODED_SIZE = 40,
    GRP_PAYLOAD_XXH3 = 48,
};
/* tensor record */
enum {
    TEN_NAME_OFFSET = 0,
    TEN_NAME_LEN = 4,
    TEN_GROUP = 8,
    TEN_DTYPE = 12,
    TEN_CODEC = 13,
    TEN_NDIM = 14,
    TEN_MAX_CODE_LEN = 15,
    TEN_SHAPE = 16,
    TEN_N_ELEMENTS = 80,
    TEN_DECODED_OFFSET = 88,
    TEN_LANE_SYMBOLS = 96,
    TEN_N_CHUNKS = 100,
    TEN_CODEBOOK_OFFSET = 104,
    TEN_CHUNKS_OFFSET = 112,
    TEN_LANES_OFFSET = 120,
    TEN_STREAM_OFFSET = 128,
    TEN_STREAM_SIZE = 136,
    TEN_DATA_OFFSET = 144,
    TEN_ENTROPY = 152,
    TEN_CODEBOOK_SIZE = 156,
};

#endif
