/* ABI test of medregion.h from C (C99 and C11), linked against the static and the shared
 * library by tests/c_abi.rs, and run under valgrind in CI. Every check prints where it failed. */
#include "medregion.h"
#include "medregion.h" /* twice on purpose: the include guard must hold */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

struct log_capture {
    int count;
    mr_log_level last_level;
    char last[512];
};

static void on_log(mr_log_level level, const char *message, void *user_data) {
    struct log_capture *cap = (struct log_capture *)user_data;
    cap->count++;
    cap->last_level = level;
    strncpy(cap->last, message, sizeof cap->last - 1);
    cap->last[sizeof cap->last - 1] = '\0';
}

static void test_versions(void) {
    CHECK_STATUS(mr_init(MR_ABI_VERSION + 1), MR_ERR_ABI_MISMATCH);
    CHECK(strstr(mr_last_error_message(), "ABI") != NULL);
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK); /* idempotent */
    CHECK(mr_abi_version() == MR_ABI_VERSION);
    CHECK(mr_version_string() != NULL && strlen(mr_version_string()) > 0);
}

static void test_status_names(void) {
    mr_status s;
    CHECK(strcmp(mr_status_name(MR_OK), "MR_OK") == 0);
    CHECK(strcmp(mr_status_name(MR_ERR_BUFFER_TOO_SMALL), "MR_ERR_BUFFER_TOO_SMALL") == 0);
    CHECK(strcmp(mr_status_name(MR_ERR_INTERNAL), "MR_ERR_INTERNAL") == 0);
    CHECK(strcmp(mr_status_name(9999u), "MR_UNKNOWN_STATUS") == 0);
    for (s = MR_OK; s <= MR_ERR_INTERNAL; ++s) {
        CHECK(strncmp(mr_status_name(s), "MR_", 3) == 0);
        CHECK(strcmp(mr_status_name(s), "MR_UNKNOWN_STATUS") != 0);
    }
}

static void test_null_pointers(void) {
    size_t needed = 0;
    CHECK_STATUS(mr_device_count(NULL), MR_ERR_NULL_POINTER);
    CHECK(strstr(mr_last_error_message(), "out_count") != NULL);
    CHECK_STATUS(mr_device_info(0, NULL), MR_ERR_NULL_POINTER);
    CHECK(strstr(mr_last_error_message(), "out") != NULL);
    CHECK_STATUS(mr_device_desc_default(NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_last_error_copy(NULL, 0, NULL), MR_OK);       /* size query, size unwanted */
    CHECK_STATUS(mr_last_error_copy(NULL, 8, &needed), MR_ERR_NULL_POINTER);
    CHECK(needed > 0);                                             /* size still reported */
    CHECK_STATUS(mr_test_panic(NULL), MR_ERR_INTERNAL);
    CHECK_STATUS(mr_log_set(NULL, MR_LOG_TRACE, NULL), MR_OK);    /* NULL callback: logging off */
}

static void test_devices(void) {
    size_t n = 0, i;
    mr_device_desc d, copy;
    CHECK_STATUS(mr_device_count(&n), MR_OK);
    CHECK(n >= 2); /* the CPU, plus CUDA devices or one unavailable CUDA entry */
    CHECK_STATUS(mr_device_desc_default(&d), MR_OK);
    CHECK(d.struct_size == sizeof d);
    CHECK_STATUS(mr_device_info(0, &d), MR_OK);
    CHECK(d.kind == MR_DEVICE_CPU);
    CHECK(d.available == 1);
    CHECK(d.compute_units >= 1);
    CHECK(strlen(d.name) > 0 && strlen(d.name) < sizeof d.name);
    CHECK(d.reason[0] == '\0');
    for (i = 1; i < n; ++i) {
        CHECK_STATUS(mr_device_desc_default(&d), MR_OK);
        CHECK_STATUS(mr_device_info(i, &d), MR_OK);
        CHECK(d.kind == MR_DEVICE_CUDA);
        if (!d.available) {
            CHECK(strlen(d.reason) > 0); /* unavailable devices say why */
            printf("cuda entry %u unavailable: %s\n", (unsigned)i, d.reason);
        }
    }
    /* out of range index: error, and the caller's struct is untouched */
    CHECK_STATUS(mr_device_desc_default(&d), MR_OK);
    memcpy(&copy, &d, sizeof d);
    CHECK_STATUS(mr_device_info(n, &d), MR_ERR_NOT_FOUND);
    CHECK(memcmp(&copy, &d, sizeof d) == 0);
    /* struct_size too small (a caller that forgot mr_device_desc_default) */
    memset(&d, 0x5a, sizeof d);
    d.struct_size = 4;
    memcpy(&copy, &d, sizeof d);
    CHECK_STATUS(mr_device_info(0, &d), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "struct_size") != NULL);
    CHECK(memcmp(&copy, &d, sizeof d) == 0);
}

static void test_error_copy(void) {
    size_t needed = 0, needed2 = 0;
    char small[4] = "xyz";
    char *big;
    CHECK_STATUS(mr_device_count(NULL), MR_ERR_NULL_POINTER); /* sets a message */
    CHECK_STATUS(mr_last_error_copy(NULL, 0, &needed), MR_OK);
    CHECK(needed == strlen(mr_last_error_message()) + 1);
    CHECK_STATUS(mr_last_error_copy(small, sizeof small, &needed2), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(needed2 == needed);
    CHECK(strcmp(small, "xyz") == 0); /* a too-small buffer is left untouched */
    /* the failed copy did not replace the stored message */
    CHECK(strstr(mr_last_error_message(), "out_count") != NULL);
    big = (char *)malloc(needed);
    CHECK(big != NULL);
    if (big) {
        CHECK_STATUS(mr_last_error_copy(big, needed, &needed2), MR_OK);
        CHECK(strcmp(big, mr_last_error_message()) == 0);
        free(big);
    }
}

static void test_panic_boundary(void) {
    CHECK_STATUS(mr_test_panic("boom from C"), MR_ERR_INTERNAL);
    CHECK(strstr(mr_last_error_message(), "boom from C") != NULL);
    CHECK(strstr(mr_last_error_message(), "internal error") != NULL);
    /* the process and the library carry on */
    CHECK_STATUS(mr_test_panic("second boom"), MR_ERR_INTERNAL);
    CHECK(strstr(mr_last_error_message(), "second boom") != NULL);
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
}

static void test_log_callback(void) {
    struct log_capture cap;
    int before;
    memset(&cap, 0, sizeof cap);
    CHECK_STATUS(mr_log_set(on_log, MR_LOG_DEBUG, &cap), MR_OK);
    CHECK_STATUS(mr_device_count(NULL), MR_ERR_NULL_POINTER);
    CHECK(cap.count >= 1);
    CHECK(cap.last_level == MR_LOG_DEBUG);
    CHECK(strstr(cap.last, "out_count") != NULL);

    before = cap.count;
    CHECK_STATUS(mr_test_panic("logged panic"), MR_ERR_INTERNAL);
    CHECK(cap.count > before);
    CHECK(cap.last_level == MR_LOG_ERROR);
    CHECK(strstr(cap.last, "logged panic") != NULL);

    /* threshold: debug messages are not delivered at MR_LOG_ERROR */
    CHECK_STATUS(mr_log_set(on_log, MR_LOG_ERROR, &cap), MR_OK);
    before = cap.count;
    CHECK_STATUS(mr_device_count(NULL), MR_ERR_NULL_POINTER);
    CHECK(cap.count == before);

    /* info milestones */
    CHECK_STATUS(mr_log_set(on_log, MR_LOG_INFO, &cap), MR_OK);
    before = cap.count;
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
    CHECK(cap.count == before + 1);
    CHECK(cap.last_level == MR_LOG_INFO);
    CHECK(strstr(cap.last, "initialised") != NULL);

    CHECK_STATUS(mr_log_set(on_log, MR_LOG_TRACE + 1, &cap), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "max_level") != NULL);

    /* off */
    CHECK_STATUS(mr_log_set(NULL, MR_LOG_NONE, NULL), MR_OK);
    before = cap.count;
    CHECK_STATUS(mr_test_panic("silent"), MR_ERR_INTERNAL);
    CHECK(cap.count == before);
}

int main(void) {
    test_versions();
    test_status_names();
    test_null_pointers();
    test_devices();
    test_error_copy();
    test_panic_boundary();
    test_log_callback();
    if (failures) {
        fprintf(stderr, "abi_test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("abi_test: all checks passed\n");
    return 0;
}
