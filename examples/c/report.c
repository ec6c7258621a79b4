/* report: the whole pipeline from C -- a chest CT and its masks in, the report text out.
 *
 *     report MODEL CT MASKS [LABELS]
 *
 * MODEL is a model package, CT a NIfTI/NRRD volume, MASKS a label map on the CT's grid (or a
 * folder of binary masks), LABELS the label table: totalseg (default), radgenome, or a JSON
 * label configuration file. MEDREGION_MAX_NEW_TOKENS, when set, caps the tokens per region.
 * Progress goes to stderr, the report (attributes, then each region under its heading) to
 * stdout -- the same text as `medregion report --quiet`.
 *
 * Build: cc -std=c99 -I include examples/c/report.c -L target/release -lmedregion -o report */
#include "medregion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const STAGES[] = {"Preprocess", "Attributes", "Encoder", "Tokens", "Region"};

static int32_t on_progress(void *user, const mr_report_event *e) {
    (void)user;
    if (e->kind != MR_REPORT_EVENT_STAGE) return 0; /* encoder slices: not shown */
    if (e->region)
        fprintf(stderr, "[%s] %s (%u/%u)\n", STAGES[e->stage], e->region, e->index + 1, e->count);
    else
        fprintf(stderr, "[%s] (%u)\n", STAGES[e->stage], e->count);
    return 0; /* non-zero would cancel */
}

/* The whole file as a NUL-terminated string (NULL on failure). */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = 0;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    mr_model *model = NULL;
    mr_session *session = NULL;
    mr_volume *ct = NULL;
    mr_masks *masks = NULL;
    mr_report *report = NULL;
    mr_masks_params mp;
    mr_report_params rp;
    char *label_json = NULL, *text = NULL;
    const char *labels = argc > 4 ? argv[4] : "totalseg", *max_tokens = getenv("MEDREGION_MAX_NEW_TOKENS");
    size_t len = 0;
    int rc = 1;

    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL CT MASKS [totalseg|radgenome|LABELS.json]\n", argv[0]);
        return 2;
    }
    mr_masks_params_default(&mp);
    if (strcmp(labels, "radgenome") == 0) {
        mp.label_table = MR_LABELS_RADGENOME;
    } else if (strcmp(labels, "totalseg") != 0) {
        if ((label_json = read_file(labels)) == NULL) {
            fprintf(stderr, "error: cannot read %s\n", labels);
            return 1;
        }
        mp.label_table = MR_LABELS_JSON;
        mp.label_table_json = label_json;
    }
    mr_report_params_default(&rp);
    rp.max_new_tokens = max_tokens ? (uint32_t)strtoul(max_tokens, NULL, 10) : 0; /* 0: the model's */
    rp.on_progress = on_progress;

    if (mr_init(MR_ABI_VERSION) == MR_OK && mr_model_load(argv[1], NULL, &model) == MR_OK &&
        mr_volume_load(argv[2], &ct) == MR_OK && mr_masks_load(argv[3], &mp, &masks) == MR_OK &&
        mr_session_create(model, NULL, &session) == MR_OK &&
        mr_session_generate_report(session, ct, masks, &rp, &report) == MR_OK &&
        mr_report_text(report, NULL, 0, &len) == MR_OK && (text = (char *)malloc(len)) != NULL &&
        mr_report_text(report, text, len, &len) == MR_OK) {
        fputs(text, stdout);
        rc = 0;
    } else {
        fprintf(stderr, "error: %s\n", mr_last_error_message());
    }
    free(text);
    mr_report_free(report);
    mr_session_free(session);
    mr_masks_free(masks);
    mr_volume_free(ct);
    mr_model_free(model);
    free(label_json);
    return rc;
}
