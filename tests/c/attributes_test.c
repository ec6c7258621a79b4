/* The attributes part of the C API: mr_attributes_params_default, mr_attributes_compute (from
 * files and from caller buffers, with no model loaded), the JSON and text copy-out, and the
 * errors a caller can make. Run by tests/c_attributes.rs as:
 *   attributes_test <lung1_image.nrrd> <lung1_label.nrrd> <lung2_label.nrrd>
 * (as C99 and as C++17, under valgrind too: no errors, no definite leaks). */
#include "medregion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, \
                    mr_last_error_message());                                                    \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

/* The text of a result, malloc'ed (caller frees), or NULL. */
static char* text_of(const mr_attributes* a, int json) {
    size_t need = 0;
    char* buf;
    mr_status s = json ? mr_attributes_json(a, NULL, 0, &need) : mr_attributes_text(a, NULL, 0, &need);
    if (s != MR_OK || need == 0) return NULL;
    buf = (char*)malloc(need);
    if (!buf) return NULL;
    s = json ? mr_attributes_json(a, buf, need, NULL) : mr_attributes_text(a, buf, need, NULL);
    if (s != MR_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int from_files(const char* ct_path, const char* label_path, const char* other_path) {
    mr_volume* ct = NULL;
    mr_volume* labels = NULL;
    mr_volume* other = NULL;
    mr_attributes* a = NULL;
    mr_attributes* b = NULL;
    mr_attributes_params p;
    char small[8];
    size_t need = 0;
    char* text;
    char* json;
    CHECK(mr_volume_load(ct_path, &ct) == MR_OK);
    CHECK(mr_volume_load(label_path, &labels) == MR_OK);
    CHECK(mr_volume_load(other_path, &other) == MR_OK);

    CHECK(mr_attributes_params_default(&p) == MR_OK);
    CHECK(p.struct_size == sizeof(mr_attributes_params) && p.label_table == MR_LABELS_TOTALSEG);
    CHECK(p.label_table_json == NULL && p.config_json == NULL);
    p.label_table = MR_LABELS_JSON;
    p.label_table_json = "{\"table\": [{\"id\": 1, \"name\": \"lung_nodules\"}]}";
    CHECK(mr_attributes_compute(ct, labels, &p, &a) == MR_OK && a != NULL);
    text = text_of(a, 0);
    CHECK(text != NULL);
    CHECK(strncmp(text, "Patient-specific attributes:\n", 29) == 0);
    CHECK(strstr(text, "- Lung nodules: 1 detected; largest ") != NULL);
    CHECK(strstr(text, "- Heart volume: not assessed.") != NULL);
    free(text);
    json = text_of(a, 1);
    CHECK(json != NULL);
    CHECK(strstr(json, "\"schema_version\": 1") != NULL && strstr(json, "\"voxels\": 837") != NULL);
    free(json);
    /* Too small a buffer: the size is reported, the buffer untouched. */
    memset(small, 'x', sizeof small);
    CHECK(mr_attributes_json(a, small, sizeof small, &need) == MR_ERR_BUFFER_TOO_SMALL && need > 100);
    CHECK(small[0] == 'x');

    /* Settings as JSON: a huge minimum volume drops the tumour. */
    p.config_json = "{\"min_lesion_volume_mm3\": 1e9}";
    CHECK(mr_attributes_compute(ct, labels, &p, &b) == MR_OK);
    text = text_of(b, 0);
    CHECK(text != NULL && strstr(text, "- Lung nodules: none detected.") != NULL);
    free(text);
    mr_attributes_free(b);
    b = NULL;

    /* Errors: another grid, NULLs, bad params, bad JSON. Nothing is written to *out. */
    CHECK(mr_attributes_compute(ct, other, NULL, &b) == MR_ERR_SHAPE && b == NULL);
    CHECK(strstr(mr_last_error_message(), "geometry must match the CT") != NULL);
    CHECK(strstr(mr_last_error_message(), "512x512x61") != NULL);
    CHECK(mr_attributes_compute(NULL, labels, NULL, &b) == MR_ERR_NULL_POINTER && b == NULL);
    CHECK(mr_attributes_compute(ct, labels, NULL, NULL) == MR_ERR_NULL_POINTER);
    p.config_json = NULL;
    p.label_table = 7;
    CHECK(mr_attributes_compute(ct, labels, &p, &b) == MR_ERR_INVALID_ARGUMENT && b == NULL);
    p.label_table = MR_LABELS_JSON;
    p.label_table_json = "{";
    CHECK(mr_attributes_compute(ct, labels, &p, &b) == MR_ERR_FORMAT && b == NULL);
    p.label_table_json = NULL;
    CHECK(mr_attributes_compute(ct, labels, &p, &b) == MR_ERR_NULL_POINTER && b == NULL);
    p.label_table = MR_LABELS_RADGENOME;
    p.struct_size = 4;
    CHECK(mr_attributes_compute(ct, labels, &p, &b) == MR_ERR_INVALID_ARGUMENT && b == NULL);
    CHECK(mr_attributes_text(NULL, NULL, 0, &need) == MR_ERR_NULL_POINTER);
    CHECK(mr_attributes_params_default(NULL) == MR_ERR_NULL_POINTER);

    mr_attributes_free(a);
    mr_attributes_free(NULL);
    mr_volume_free(ct);
    mr_volume_free(labels);
    mr_volume_free(other);
    return 0;
}

/* A 16x16x8 phantom from caller buffers: a 4x4x2 nodule (TotalSegmentator id 118) and a heart
 * (id 51) of 100 voxels, at 0.7 x 0.7 x 2.5 mm. */
static int from_buffers(void) {
    static short hu[16 * 16 * 8];
    static unsigned char lab[16 * 16 * 8];
    mr_volume_buffer desc;
    mr_volume* ct = NULL;
    mr_volume* labels = NULL;
    mr_attributes* a = NULL;
    char* json;
    char* text;
    int x, y, z, n = 0;
    for (z = 2; z < 4; ++z)
        for (y = 5; y < 9; ++y)
            for (x = 5; x < 9; ++x) lab[x + 16 * (y + 16 * z)] = 118;
    for (z = 5; z < 8 && n < 100; ++z)
        for (y = 0; y < 16 && n < 100; ++y)
            for (x = 0; x < 16 && n < 100; ++x, ++n) lab[x + 16 * (y + 16 * z)] = 51;
    CHECK(mr_volume_buffer_default(&desc) == MR_OK);
    desc.dtype = MR_DTYPE_I16;
    desc.data = hu;
    desc.data_len = sizeof hu;
    desc.dims[0] = 16;
    desc.dims[1] = 16;
    desc.dims[2] = 8;
    desc.spacing[0] = 0.7;
    desc.spacing[1] = 0.7;
    desc.spacing[2] = 2.5;
    desc.coordinates = MR_COORDS_LPS;
    CHECK(mr_volume_from_buffer(&desc, &ct) == MR_OK);
    desc.dtype = MR_DTYPE_U8;
    desc.data = lab;
    desc.data_len = sizeof lab;
    CHECK(mr_volume_from_buffer(&desc, &labels) == MR_OK);
    CHECK(mr_attributes_compute(ct, labels, NULL, &a) == MR_OK);
    json = text_of(a, 1);
    CHECK(json != NULL);
    CHECK(strstr(json, "\"voxels\": 32") != NULL && strstr(json, "\"voxels\": 100") != NULL);
    free(json);
    text = text_of(a, 0);
    CHECK(text != NULL);
    CHECK(strstr(text, "- Heart volume: 0.1 mL.") != NULL);
    CHECK(strstr(text, "- Lung nodules: 1 detected; largest ") != NULL);
    CHECK(strstr(text, "- Liver volume: not assessed.") != NULL);
    free(text);
    mr_attributes_free(a);
    mr_volume_free(ct);
    mr_volume_free(labels);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CT LABELS OTHER_LABELS\n", argv[0]);
        return 2;
    }
    CHECK(mr_init(MR_ABI_VERSION) == MR_OK);
    if (from_files(argv[1], argv[2], argv[3]) != 0) return 1;
    if (from_buffers() != 0) return 1;
    printf("attributes_test: ok\n");
    return 0;
}
