#include <stdio.h>
#include "medregion.h"

int main(void) {
    size_t i, n = 0;
    if (mr_init(MR_ABI_VERSION) != MR_OK) {
        fprintf(stderr, "medregion: %s\n", mr_last_error_message());
        return 1;
    }
    printf("medregion %s\n", mr_version_string());
    if (mr_device_count(&n) != MR_OK) return 1;
    for (i = 0; i < n; ++i) {
        mr_device_desc d;
        mr_device_desc_default(&d);
        if (mr_device_info(i, &d) == MR_OK)
            printf("%s %d: %s\n", d.kind == MR_DEVICE_CPU ? "cpu" : "cuda", d.ordinal,
                   d.available ? d.name : d.reason);
    }
    return 0;
}
