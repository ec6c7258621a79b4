/* The volume part of the C API: mr_volume_load (NRRD and NIfTI), mr_volume_buffer_default,
 * mr_volume_from_buffer (dense, strided, rescaled), the getters, and the errors a caller can
 * make. Run by tests/c_volume.rs as: volume_test <lung1_small.nrrd> <lung1_small_lps_sform.nii.gz>
 * (as C99 and as C++17, under valgrind too: no errors, no definite leaks). */
#include "medregion.h"

#include <math.h> /* NAN */
#include <stdio.h>
#include <string.h>

static double absd(double x) { return x < 0 ? -x : x; }

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, \
                    mr_last_error_message());                                                    \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

static int load_files(const char* nrrd_path, const char* nifti_path) {
    mr_volume* a = NULL;
    mr_volume* b = NULL;
    size_t dims[3] = {0, 0, 0};
    double spacing[3], affine[16], affine_b[16], range[2], range_b[2];
    int i;
    CHECK(mr_volume_load(nrrd_path, &a) == MR_OK && a != NULL);
    CHECK(mr_volume_dims(a, dims) == MR_OK);
    CHECK(dims[0] == 64 && dims[1] == 64 && dims[2] == 24);
    CHECK(mr_volume_spacing(a, spacing) == MR_OK);
    CHECK(absd(spacing[0] - 4.5625) < 1e-9 && absd(spacing[1] - 4.5625) < 1e-9 && absd(spacing[2] - 10.0) < 1e-9);
    /* LPS on disk, RAS in the API: x and y rows negated. */
    CHECK(mr_volume_affine(a, affine) == MR_OK);
    CHECK(affine[0] == -4.5625 && affine[3] == 146.0 && affine[5] == -4.5625 && affine[7] == 325.0);
    CHECK(affine[10] == 10.0 && affine[15] == 1.0 && affine[12] == 0.0);
    CHECK(mr_volume_hu_range(a, range) == MR_OK && range[0] >= -1024.0 && range[1] > 0.0);

    CHECK(mr_volume_load(nifti_path, &b) == MR_OK && b != NULL);
    CHECK(mr_volume_affine(b, affine_b) == MR_OK);
    for (i = 0; i < 16; ++i) CHECK(absd(affine[i] - affine_b[i]) < 1e-4);
    CHECK(mr_volume_hu_range(b, range_b) == MR_OK && range_b[0] == range[0] && range_b[1] == range[1]);
    mr_volume_free(a);
    mr_volume_free(b);
    return 0;
}

static int load_errors(void) {
    mr_volume* v = NULL;
    size_t dims[3];
    CHECK(mr_volume_load("/nonexistent/ct.nii.gz", &v) == MR_ERR_IO && v == NULL);
    CHECK(strstr(mr_last_error_message(), "mr_volume_load") != NULL);
    CHECK(mr_volume_load(NULL, &v) == MR_ERR_NULL_POINTER && v == NULL);
    CHECK(mr_volume_load("x.nii", NULL) == MR_ERR_NULL_POINTER);
    CHECK(mr_volume_dims(NULL, dims) == MR_ERR_NULL_POINTER);
    mr_volume_free(NULL);
    return 0;
}

static int buffers(void) {
    int16_t vox[4 * 3 * 2];   /* x fastest */
    int16_t zfirst[4 * 3 * 2]; /* z fastest, then x, then y */
    int16_t copy[4 * 3 * 2];
    float bad[4 * 3 * 2];
    mr_volume_buffer b;
    mr_volume* v = NULL;
    mr_volume* w = NULL;
    double affine[16], range[2];
    size_t dims[3];
    int x, y, z;
    for (z = 0; z < 2; ++z)
        for (y = 0; y < 3; ++y)
            for (x = 0; x < 4; ++x) {
                int16_t value = (int16_t)(100 * z + 10 * y + x);
                vox[x + 4 * (y + 3 * z)] = value;
                zfirst[z + 2 * (x + 4 * y)] = value;
            }
    memcpy(copy, vox, sizeof vox);

    CHECK(mr_volume_buffer_default(&b) == MR_OK);
    CHECK(b.struct_size == sizeof b && b.rescale_slope == 1.0 && b.rescale_intercept == 0.0);
    CHECK(b.coordinates == MR_COORDS_UNSET && b.strides[0] == 0 && b.affine[0] == 0.0);
    b.dtype = MR_DTYPE_I16;
    b.data = vox;
    b.data_len = sizeof vox;
    b.dims[0] = 4;
    b.dims[1] = 3;
    b.dims[2] = 2;
    b.spacing[0] = 0.5;
    b.spacing[1] = 0.5;
    b.spacing[2] = 2.0;
    /* Coordinates must be chosen: left/right is never guessed. */
    CHECK(mr_volume_from_buffer(&b, &v) == MR_ERR_INVALID_ARGUMENT && v == NULL);
    CHECK(strstr(mr_last_error_message(), "coordinates") != NULL);
    b.coordinates = MR_COORDS_LPS;
    b.rescale_slope = 2.0;
    b.rescale_intercept = -1024.0;
    CHECK(mr_volume_from_buffer(&b, &v) == MR_OK && v != NULL);
    CHECK(memcmp(copy, vox, sizeof vox) == 0);
    CHECK(mr_volume_dims(v, dims) == MR_OK && dims[0] == 4 && dims[1] == 3 && dims[2] == 2);
    CHECK(mr_volume_affine(v, affine) == MR_OK);
    CHECK(affine[0] == -0.5 && affine[5] == -0.5 && affine[10] == 2.0 && affine[15] == 1.0);
    CHECK(mr_volume_hu_range(v, range) == MR_OK && range[0] == -1024.0 && range[1] == 2.0 * 123 - 1024.0);

    /* The same voxels stored z fastest, described by byte strides. */
    b.data = zfirst;
    b.strides[0] = 2 * 2;
    b.strides[1] = 2 * 2 * 4;
    b.strides[2] = 2;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_OK && w != NULL);
    CHECK(mr_volume_hu_range(w, range) == MR_OK && range[0] == -1024.0 && range[1] == 2.0 * 123 - 1024.0);
    mr_volume_free(w);
    w = NULL;

    /* A buffer shorter than dims x strides. */
    b.data_len = sizeof zfirst - 1;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_SHAPE && w == NULL);
    b.data_len = sizeof zfirst;
    b.strides[1] = -16;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_INVALID_ARGUMENT && w == NULL);
    b.strides[0] = b.strides[1] = b.strides[2] = 0;
    b.spacing[1] = 0.0;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_INVALID_ARGUMENT && w == NULL);
    b.spacing[1] = 0.5;
    b.dims[2] = 0;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_SHAPE && w == NULL);
    b.dims[2] = 2;
    b.data = NULL;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_NULL_POINTER && w == NULL);

    /* NaN voxels: refused with their count and the first position. */
    memset(bad, 0, sizeof bad);
    bad[5] = NAN;
    b.dtype = MR_DTYPE_F32;
    b.data = bad;
    b.data_len = sizeof bad;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_INVALID_ARGUMENT && w == NULL);
    CHECK(strstr(mr_last_error_message(), "(1, 1, 0)") != NULL);

    b.struct_size = 8;
    CHECK(mr_volume_from_buffer(&b, &w) == MR_ERR_INVALID_ARGUMENT && w == NULL);
    CHECK(mr_volume_from_buffer(NULL, &w) == MR_ERR_NULL_POINTER);
    CHECK(mr_volume_buffer_default(NULL) == MR_ERR_NULL_POINTER);
    mr_volume_free(v);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <lung1_small.nrrd> <lung1_small_lps_sform.nii.gz>\n", argv[0]);
        return 2;
    }
    if (mr_init(MR_ABI_VERSION) != MR_OK) return 1;
    if (load_files(argv[1], argv[2]) || load_errors() || buffers()) return 1;
    printf("volume C test: ok\n");
    return 0;
}
