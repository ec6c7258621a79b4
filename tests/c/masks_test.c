/* The masks part of the C API: mr_masks_params_default, mr_masks_load (a label-map file and a
 * RadGenome-style folder of binary masks), mr_masks_from_buffer, mr_masks_from_volume,
 * mr_masks_add_label_map (a TotalSegmentator subtask map), mr_masks_report_json, mr_masks_free,
 * and the errors a caller can make. Run by tests/c_masks.rs as: masks_test <DIR>, where DIR holds
 * labels.nii.gz, nodules.nii.gz, other.nii.gz (another grid), radgenome/ and empty/
 * (as C99 and as C++17, under valgrind too: no errors, no definite leaks). */
#include "check.h"

#include <stdlib.h>
#include <string.h>

/* The report of `m`, malloc'ed (caller frees), or NULL. */
static char* report_of(const mr_masks* m) {
    size_t need = 0;
    char* buf;
    if (mr_masks_report_json(m, NULL, 0, &need) != MR_OK || need == 0) return NULL;
    buf = (char*)malloc(need);
    if (!buf) return NULL;
    if (mr_masks_report_json(m, buf, need, NULL) != MR_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int contains(const char* json, const char* what) { return json != NULL && strstr(json, what) != NULL; }

int main(int argc, char** argv) {
    char p[4096];
    mr_masks_params params;
    mr_masks* m = NULL;
    mr_masks* out = NULL;
    mr_masks* sentinel;
    mr_volume* nodules = NULL;
    mr_volume* other = NULL;
    mr_volume_buffer desc;
    static unsigned char lab[4 * 3 * 2];
    char small[4];
    size_t need = 0, need2 = 0;
    char* json;
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    sentinel = (mr_masks*)&params; /* any non-NULL pointer; never dereferenced */
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
    CHECK_STATUS(mr_masks_params_default(&params), MR_OK);
    CHECK(params.struct_size == sizeof(mr_masks_params));
    CHECK(params.label_table == MR_LABELS_TOTALSEG && params.label_table_json == NULL);

    /* A TotalSegmentator label map (NULL params: the defaults). */
    snprintf(p, sizeof p, "%s/labels.nii.gz", argv[1]);
    CHECK_STATUS(mr_masks_load(p, NULL, &m), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"label_table\": \"totalseg\""));
    CHECK(contains(json, "\"class\": \"lung_upper_lobe_right\""));
    CHECK(contains(json, "\"label\": 999")); /* an unknown value: reported, not an error */
    free(json);
    /* Size query, and a too-small buffer left untouched. */
    CHECK_STATUS(mr_masks_report_json(m, NULL, 0, &need), MR_OK);
    memset(small, 'x', sizeof small);
    CHECK_STATUS(mr_masks_report_json(m, small, sizeof small, &need2), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(need2 == need && need > 100 && small[0] == 'x');

    /* The lung_nodules subtask map on the same grid, with its own table. */
    snprintf(p, sizeof p, "%s/nodules.nii.gz", argv[1]);
    CHECK_STATUS(mr_volume_load(p, &nodules), MR_OK);
    params.label_table = MR_LABELS_TOTALSEG_LUNG_NODULES;
    CHECK_STATUS(mr_masks_add_label_map(m, nodules, &params), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"label_table\": \"totalseg:lung_nodules\""));
    CHECK(contains(json, "\"class\": \"lung_nodules\""));
    free(json);
    /* Another grid: MR_ERR_SHAPE, the masks unchanged. */
    CHECK_STATUS(mr_masks_report_json(m, NULL, 0, &need), MR_OK);
    snprintf(p, sizeof p, "%s/other.nii.gz", argv[1]);
    CHECK_STATUS(mr_volume_load(p, &other), MR_OK);
    CHECK_STATUS(mr_masks_add_label_map(m, other, &params), MR_ERR_SHAPE);
    CHECK(strstr(mr_last_error_message(), "geometry must match") != NULL);
    CHECK_STATUS(mr_masks_report_json(m, NULL, 0, &need2), MR_OK);
    CHECK(need2 == need);
    mr_masks_free(m);
    m = NULL;

    /* A subtask map on its own, from a loaded volume. */
    CHECK_STATUS(mr_masks_from_volume(nodules, &params, &m), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"key\": \"lung_nodule\",\n      \"present\": true"));
    free(json);
    mr_masks_free(m);
    m = NULL;

    /* The RadGenome folder layout: one binary mask per region, matched by file name. */
    params.label_table = MR_LABELS_RADGENOME;
    snprintf(p, sizeof p, "%s/radgenome", argv[1]);
    CHECK_STATUS(mr_masks_load(p, &params, &m), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"kind\": \"binary_mask\""));
    CHECK(contains(json, "\"class\": \"trachea and bronchie\""));
    CHECK(contains(json, "\"key\": \"large_airways\",\n      \"present\": true"));
    CHECK(contains(json, "\"key\": \"osseous\",\n      \"present\": false"));
    free(json);
    mr_masks_free(m);
    m = NULL;

    /* A label map in caller memory (borrowed for the call only). */
    lab[0] = 12;  /* lung_upper_lobe_right */
    lab[5] = 51;  /* heart */
    lab[7] = 118; /* lung_nodules (packed id of the totalseg table) */
    CHECK_STATUS(mr_volume_buffer_default(&desc), MR_OK);
    desc.dtype = MR_DTYPE_U8;
    desc.data = lab;
    desc.data_len = sizeof lab;
    desc.dims[0] = 4;
    desc.dims[1] = 3;
    desc.dims[2] = 2;
    desc.spacing[0] = 1.0;
    desc.spacing[1] = 1.0;
    desc.spacing[2] = 2.0;
    desc.coordinates = MR_COORDS_LPS;
    params.label_table = MR_LABELS_TOTALSEG;
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &m), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"class\": \"heart\",\n          \"voxels\": 1"));
    CHECK(contains(json, "\"dims\": [\n    4,\n    3,\n    2\n  ]"));
    free(json);
    mr_masks_free(m);
    m = NULL;
    /* A JSON table. */
    params.label_table = MR_LABELS_JSON;
    params.label_table_json = "{\"table\": [{\"id\": 51, \"name\": \"heart\"}]}";
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &m), MR_OK);
    json = report_of(m);
    CHECK(contains(json, "\"label\": 12") && contains(json, "\"label\": 118"));
    free(json);
    mr_masks_free(m);
    m = NULL;

    /* Errors: *out is never written. */
    out = sentinel;
    params.label_table_json = "{\"organs\": [{\"key\": \"liver\", \"classes\": [\"livr\"]}]}";
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &out), MR_ERR_FORMAT);
    CHECK(strstr(mr_last_error_message(), "livr") != NULL);
    params.label_table_json = NULL;
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &out), MR_ERR_NULL_POINTER);
    params.label_table = 99;
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &out), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_masks_params_default(&params), MR_OK);
    params.struct_size = 4;
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &out), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_masks_params_default(&params), MR_OK);
    desc.coordinates = MR_COORDS_UNSET;
    CHECK_STATUS(mr_masks_from_buffer(&desc, &params, &out), MR_ERR_INVALID_ARGUMENT);
    snprintf(p, sizeof p, "%s/empty", argv[1]);
    CHECK_STATUS(mr_masks_load(p, &params, &out), MR_ERR_FORMAT);
    snprintf(p, sizeof p, "%s/no-such-file.nii.gz", argv[1]);
    CHECK_STATUS(mr_masks_load(p, &params, &out), MR_ERR_IO);
    CHECK_STATUS(mr_masks_load(NULL, &params, &out), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_masks_load(p, &params, NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_masks_from_buffer(NULL, &params, &out), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_masks_from_volume(NULL, &params, &out), MR_ERR_NULL_POINTER);
    CHECK(out == sentinel);
    CHECK_STATUS(mr_masks_add_label_map(NULL, nodules, &params), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_masks_report_json(NULL, NULL, 0, &need), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_masks_params_default(NULL), MR_ERR_NULL_POINTER);
    mr_masks_free(NULL);

    mr_volume_free(nodules);
    mr_volume_free(other);
    if (failures == 0) printf("masks_test: ok\n");
    return failures != 0;
}
