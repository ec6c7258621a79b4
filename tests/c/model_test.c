/* Model API from C: load from a file and from memory, info, config JSON, and every way of
 * getting it wrong. argv[1]: a valid package; argv[2]: a corrupt file. Run by tests/c_model.rs
 * against both libraries and under valgrind. */
#include "medregion.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)n + 64);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void check_model(mr_model *m) {
    mr_model_desc d;
    size_t needed = 0, needed2 = 0;
    char small[8] = "unset";
    char *json;
    CHECK_STATUS(mr_model_desc_default(&d), MR_OK);
    CHECK_STATUS(mr_model_info(m, &d), MR_OK);
    CHECK(d.format_version >= 1);
    CHECK(d.n_weights > 10 && d.n_params > d.n_weights);
    CHECK(d.file_bytes > 1000);
    CHECK(strlen(d.name) > 0);
    CHECK(strncmp(d.checksum, "sha256:", 7) == 0 || strlen(d.checksum) >= 64);
    CHECK(strcmp(d.tokenizer, "bytes") == 0);

    CHECK_STATUS(mr_model_config_json(m, NULL, 0, &needed), MR_OK);
    CHECK(needed > 100);
    CHECK_STATUS(mr_model_config_json(m, small, sizeof small, &needed2), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(needed2 == needed && strcmp(small, "unset") == 0);
    json = (char *)malloc(needed);
    CHECK(json != NULL);
    if (json) {
        CHECK_STATUS(mr_model_config_json(m, json, needed, NULL), MR_OK);
        CHECK(json[0] == '{' && strlen(json) + 1 == needed);
        CHECK(strstr(json, "\"decoder\"") != NULL);
        free(json);
    }
}

int main(int argc, char **argv) {
    mr_model *m = NULL, *sentinel = (mr_model *)(uintptr_t)0x1;
    mr_model_params p;
    mr_model_desc d;
    unsigned char *bytes;
    size_t len = 0;
    if (argc < 3) {
        fprintf(stderr, "usage: model_test PACKAGE CORRUPT_FILE\n");
        return 2;
    }
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);

    /* from a file, default params (NULL) and explicit params with checksum verification */
    CHECK_STATUS(mr_model_load(argv[1], NULL, &m), MR_OK);
    if (m) check_model(m);
    mr_model_free(m);
    m = NULL;
    CHECK_STATUS(mr_model_params_default(&p), MR_OK);
    CHECK(p.struct_size == sizeof p && p.verify_checksum == 0 && p.device_kind == MR_DEVICE_CPU);
    CHECK(p.gpu_encoder == MR_GPU_PRECISION_F32 && p.gpu_prefill_copies == 0);
    p.verify_checksum = 1;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_OK);
    mr_model_free(m);
    m = NULL;

    /* from memory (the bytes outlive the model) */
    bytes = read_file(argv[1], &len);
    CHECK(bytes != NULL);
    if (bytes) {
        CHECK_STATUS(mr_model_load_from_memory(bytes, len, &p, &m), MR_OK);
        if (m) check_model(m);
        mr_model_free(m);
        m = NULL;
        /* truncated in memory: a format error, nothing returned */
        CHECK_STATUS(mr_model_load_from_memory(bytes, len / 2, NULL, &sentinel), MR_ERR_FORMAT);
        CHECK(sentinel == (mr_model *)(uintptr_t)0x1);
        /* misaligned start */
        CHECK_STATUS(mr_model_load_from_memory(bytes + 1, len - 1, NULL, &sentinel), MR_ERR_INVALID_ARGUMENT);
        CHECK(sentinel == (mr_model *)(uintptr_t)0x1);
        free(bytes);
    }

    /* bad input: every one an error naming the problem, *out untouched */
    CHECK_STATUS(mr_model_load("/nonexistent/model.mrpkg", NULL, &sentinel), MR_ERR_IO);
    CHECK(strstr(mr_last_error_message(), "/nonexistent/model.mrpkg") != NULL);
    CHECK_STATUS(mr_model_load(argv[2], NULL, &sentinel), MR_ERR_FORMAT);
    CHECK(sentinel == (mr_model *)(uintptr_t)0x1);
    CHECK_STATUS(mr_model_load(NULL, NULL, &m), MR_ERR_NULL_POINTER);
    CHECK(strstr(mr_last_error_message(), "path") != NULL);
    CHECK_STATUS(mr_model_load(argv[1], NULL, NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_load_from_memory(NULL, 10, NULL, &m), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_params_default(NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_desc_default(NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_info(NULL, &d), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_config_json(NULL, NULL, 0, NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_model_params_default(&p), MR_OK);
    p.struct_size = 4;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "struct_size") != NULL);
    /* A caller built against the first header (struct_size 16, through device_ordinal): the
       fields it lacks keep their defaults, whatever lies after its struct. */
    CHECK_STATUS(mr_model_params_default(&p), MR_OK);
    p.struct_size = 16;
    p.gpu_encoder = 77; /* beyond its struct: not read */
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_OK);
    mr_model_free(m);
    m = NULL;
    CHECK_STATUS(mr_model_params_default(&p), MR_OK);
    p.gpu_encoder = 77;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "gpu_encoder") != NULL);
    CHECK(m == NULL);
    p.gpu_encoder = MR_GPU_PRECISION_BF16;
    p.gpu_prefill_copies = 1;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_OK); /* the CPU ignores the GPU settings */
    mr_model_free(m);
    m = NULL;
    CHECK_STATUS(mr_model_params_default(&p), MR_OK);
    p.device_kind = 77;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_ERR_INVALID_ARGUMENT);
    p.device_kind = MR_DEVICE_CUDA;
    /* No CUDA in this build (or no driver): refused with the reason, nothing loaded. */
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_ERR_UNSUPPORTED);
    CHECK(strstr(mr_last_error_message(), "cuda:0") != NULL);
    CHECK(m == NULL);
    p.device_ordinal = -1;
    CHECK_STATUS(mr_model_load(argv[1], &p, &m), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "device_ordinal") != NULL);
    CHECK(m == NULL);
    mr_model_free(NULL); /* no-op */

    if (failures) {
        fprintf(stderr, "model_test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("model_test: all checks passed\n");
    return 0;
}
