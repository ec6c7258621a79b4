/* The end-to-end report from C: a full report (JSON, text, region keys and texts agreeing),
 * progress events in order, streamed tokens per region, cancel by either callback and by
 * mr_session_cancel from another thread, one model shared by 4 sessions on 4 threads giving the
 * same bytes, bad input (a too small context too), and a session that still works after every
 * failure. argv: PACKAGE CT LABELS [quick]. "quick" (the valgrind runs) reports one region and
 * skips the slow parts (the threads and the second decoding). Run by tests/c_report.rs. */
#include "medregion.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAX_EVENTS 256
#define MAX_REGIONS 16
#define N_THREADS 4
#define MAX_NEW_TOKENS 4

static const char *const HEADERS[6] = {"Lung", "Large airways", "Mediastinum", "Heart and great vessels",
                                       "Osseous structures", "Upper abdomen"};

typedef struct {
    int kind, stage;
    unsigned index, count;
    char region[64];
} event_rec;

/* One call's callback state. */
typedef struct {
    mr_session *session;
    event_rec events[MAX_EVENTS];
    size_t n_events;
    size_t tokens[MAX_REGIONS];
    char streamed[MAX_REGIONS][512];
    size_t n_tokens;
    int bad_token;               /* a token callback with bad arguments */
    int stop_at_stage;           /* progress: return non-zero when this stage starts (-1: never) */
    size_t stop_after_tokens;    /* token: return non-zero at this many tokens (0: never) */
    size_t tokens_after_stop;    /* token callbacks after the one that returned non-zero */
    int stopped;
    mr_status busy_status;       /* a nested call on the session during the run */
    /* cancel from another thread */
    int use_canceller;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int encoder_started, cancel_sent;
} state;

static void state_init(state *st, mr_session *s) {
    memset(st, 0, sizeof *st);
    st->session = s;
    st->stop_at_stage = -1;
    st->busy_status = MR_OK;
    pthread_mutex_init(&st->mutex, NULL);
    pthread_cond_init(&st->cond, NULL);
}

static void state_destroy(state *st) {
    pthread_mutex_destroy(&st->mutex);
    pthread_cond_destroy(&st->cond);
}

static int32_t on_progress(void *user, const mr_report_event *e) {
    state *st = (state *)user;
    if (st->n_events < MAX_EVENTS) {
        event_rec *r = &st->events[st->n_events];
        r->kind = e->kind;
        r->stage = e->stage;
        r->index = e->index;
        r->count = e->count;
        r->region[0] = 0;
        if (e->region) {
            strncpy(r->region, e->region, sizeof r->region - 1);
            r->region[sizeof r->region - 1] = 0;
        }
        if (e->struct_size != sizeof(mr_report_event)) r->kind = -1;
    }
    st->n_events++;
    if (st->n_events == 1) st->busy_status = mr_session_reset(st->session); /* refused: running */
    if (st->use_canceller && e->kind == MR_REPORT_EVENT_STAGE && e->stage == MR_STAGE_ENCODER) {
        /* Wait here until the other thread has called mr_session_cancel. */
        pthread_mutex_lock(&st->mutex);
        st->encoder_started = 1;
        pthread_cond_broadcast(&st->cond);
        while (!st->cancel_sent) pthread_cond_wait(&st->cond, &st->mutex);
        pthread_mutex_unlock(&st->mutex);
    }
    return (e->kind == MR_REPORT_EVENT_STAGE && e->stage == st->stop_at_stage) ? 1 : 0;
}

static int32_t on_token(void *user, uint32_t region_index, const char *region, const char *piece, size_t len) {
    state *st = (state *)user;
    if (st->stopped) st->tokens_after_stop++;
    if (region_index >= MAX_REGIONS || region == NULL || piece == NULL || len == 0) {
        st->bad_token = 1;
        return 0;
    }
    st->tokens[region_index]++;
    st->n_tokens++;
    if (strlen(st->streamed[region_index]) + len < sizeof st->streamed[0])
        strncat(st->streamed[region_index], piece, len);
    if (st->stop_after_tokens > 0 && st->n_tokens == st->stop_after_tokens) {
        st->stopped = 1;
        return 1;
    }
    return 0;
}

static void *cancel_thread(void *arg) {
    state *st = (state *)arg;
    pthread_mutex_lock(&st->mutex);
    while (!st->encoder_started) pthread_cond_wait(&st->cond, &st->mutex);
    pthread_mutex_unlock(&st->mutex);
    CHECK_STATUS(mr_session_cancel(st->session), MR_OK);
    pthread_mutex_lock(&st->mutex);
    st->cancel_sent = 1;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->mutex);
    return NULL;
}

/* A string getter with the size convention: size query, then the copy. Caller frees. */
typedef mr_status (*getter)(const mr_report *, size_t, char *, size_t, size_t *);

static mr_status get_json(const mr_report *r, size_t i, char *b, size_t n, size_t *need) {
    (void)i;
    return mr_report_json(r, b, n, need);
}
static mr_status get_text(const mr_report *r, size_t i, char *b, size_t n, size_t *need) {
    (void)i;
    return mr_report_text(r, b, n, need);
}

static char *fetch(getter g, const mr_report *r, size_t index) {
    size_t needed = 0;
    char *buf;
    CHECK_STATUS(g(r, index, NULL, 0, &needed), MR_OK);
    if (needed == 0) return NULL;
    buf = (char *)malloc(needed);
    CHECK_STATUS(g(r, index, buf, needed, &needed), MR_OK);
    CHECK(strlen(buf) + 1 == needed);
    return buf;
}

/* `s` as a JSON string body, escaped as serde_json does. Caller frees. */
static char *json_escape(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = (char *)malloc(6 * n + 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': out[o++] = '\\'; out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; out[o++] = '\\'; break;
        case '\n': out[o++] = '\\'; out[o++] = 'n'; break;
        case '\r': out[o++] = '\\'; out[o++] = 'r'; break;
        case '\t': out[o++] = '\\'; out[o++] = 't'; break;
        case '\b': out[o++] = '\\'; out[o++] = 'b'; break;
        case '\f': out[o++] = '\\'; out[o++] = 'f'; break;
        default:
            if (c < 0x20) o += (size_t)sprintf(out + o, "\\u%04x", c);
            else out[o++] = (char)c;
        }
    }
    out[o] = 0;
    return out;
}

/* The region texts and keys agree with the JSON: after `"key": "<key>"` the next `"text": ` holds
 * the same string. */
static void check_region_in_json(const char *json, const char *key, const char *text) {
    char pattern[128];
    const char *at, *t;
    char *esc = json_escape(text);
    snprintf(pattern, sizeof pattern, "\"key\": \"%s\"", key);
    at = strstr(json, pattern);
    CHECK(at != NULL);
    if (at) {
        t = strstr(at, "\"text\": \"");
        CHECK(t != NULL);
        if (t) {
            t += strlen("\"text\": \"");
            CHECK(strncmp(t, esc, strlen(esc)) == 0 && t[strlen(esc)] == '"');
        }
    }
    free(esc);
}

/* Everything a finished report must satisfy; `n_regions` expected. */
static void check_report(const mr_report *r, size_t n_regions, const state *st) {
    size_t n = 0, i, needed = 0;
    char *json = fetch(get_json, r, 0), *text = fetch(get_text, r, 0);
    char small[4] = {'x', 'x', 'x', 'x'};
    CHECK_STATUS(mr_report_region_count(r, &n), MR_OK);
    CHECK(n == n_regions);
    CHECK(json && strstr(json, "\"schema_version\": 1") != NULL);
    CHECK(json && json[strlen(json) - 1] == '\n');
    CHECK(text && strncmp(text, "Patient-specific attributes:", 28) == 0);
    CHECK(text && strstr(text, "Lung volume:") != NULL);
    for (i = 0; i < n && json && text; i++) {
        char *key = fetch(mr_report_region_key, r, i), *rt = fetch(mr_report_region_text, r, i);
        char heading[96];
        CHECK(key && rt && strlen(rt) > 0);
        if (key && rt) {
            check_region_in_json(json, key, rt);
            if (st) {
                CHECK(st->tokens[i] >= 1 && st->tokens[i] <= MAX_NEW_TOKENS);
                CHECK(strstr(st->streamed[i], rt) != NULL); /* the text is the trimmed stream */
            }
        }
        if (n == 6) {
            snprintf(heading, sizeof heading, "\n%s:\n%s\n", HEADERS[i], rt ? rt : "");
            CHECK(strstr(text, heading) != NULL);
        }
        free(key);
        free(rt);
    }
    /* Buffer conventions: too small -> needed size and untouched buffer; index out of range. */
    CHECK_STATUS(mr_report_text(r, small, sizeof small, &needed), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(text && needed == strlen(text) + 1);
    CHECK(small[0] == 'x' && small[3] == 'x');
    CHECK_STATUS(mr_report_json(r, small, sizeof small, &needed), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(json && needed == strlen(json) + 1);
    CHECK_STATUS(mr_report_region_text(r, n, NULL, 0, &needed), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "index") != NULL);
    CHECK_STATUS(mr_report_region_key(r, n + 100, NULL, 0, &needed), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_report_region_count(r, NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_report_text(NULL, NULL, 0, &needed), MR_ERR_NULL_POINTER);
    free(json);
    free(text);
}

/* The events of a full run: preprocess, attributes, encoder (+ progress), tokens, regions. */
static void check_events(const state *st, size_t n_regions) {
    static const int order[4] = {MR_STAGE_PREPROCESS, MR_STAGE_ATTRIBUTES, MR_STAGE_ENCODER, MR_STAGE_TOKENS};
    size_t i, next = 0, regions = 0, progress = 0;
    unsigned last_done = 0, encoder_count = 0;
    CHECK(st->n_events <= MAX_EVENTS);
    for (i = 0; i < st->n_events && i < MAX_EVENTS; i++) {
        const event_rec *e = &st->events[i];
        CHECK(e->kind == MR_REPORT_EVENT_STAGE || e->kind == MR_REPORT_EVENT_PROGRESS);
        if (e->kind == MR_REPORT_EVENT_PROGRESS) {
            CHECK(e->stage == MR_STAGE_ENCODER && next == 3); /* between encoder and tokens */
            CHECK(e->index > last_done && e->index <= e->count && e->count == encoder_count);
            last_done = e->index;
            progress++;
        } else if (next < 4) {
            CHECK(e->stage == order[next]);
            CHECK(e->region[0] == 0);
            if (e->stage == MR_STAGE_ENCODER) encoder_count = e->count;
            if (e->stage == MR_STAGE_TOKENS) CHECK(e->count == n_regions);
            next++;
        } else {
            CHECK(e->stage == MR_STAGE_REGION && e->index == regions && e->count == n_regions);
            CHECK(e->region[0] != 0);
            regions++;
        }
    }
    CHECK(next == 4 && regions == n_regions);
    CHECK(encoder_count > 0 && progress >= 1 && last_done == encoder_count);
}

typedef struct {
    const mr_model *model;
    const mr_volume *ct;
    const mr_masks *masks;
    const char *want_text;
    char *const *want_regions;
    size_t n_regions;
    int ok;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = (worker_arg *)p;
    mr_session_params sp;
    mr_report_params rp;
    mr_session *s = NULL;
    mr_report *r = NULL;
    size_t i, n = 0;
    char *text;
    a->ok = 0;
    if (mr_session_params_default(&sp) != MR_OK) return NULL;
    sp.threads = 1;
    if (mr_session_create(a->model, &sp, &s) != MR_OK) return NULL;
    mr_report_params_default(&rp);
    rp.max_new_tokens = MAX_NEW_TOKENS;
    if (mr_session_generate_report(s, a->ct, a->masks, &rp, &r) == MR_OK) {
        text = fetch(get_text, r, 0);
        a->ok = text != NULL && strcmp(text, a->want_text) == 0;
        free(text);
        if (mr_report_region_count(r, &n) != MR_OK || n != a->n_regions) a->ok = 0;
        for (i = 0; i < n && a->ok; i++) {
            char *rt = fetch(mr_report_region_text, r, i);
            a->ok = rt != NULL && strcmp(rt, a->want_regions[i]) == 0;
            free(rt);
        }
    }
    mr_report_free(r);
    mr_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    mr_model *model = NULL;
    mr_session *s = NULL;
    mr_volume *ct = NULL, *small_ct = NULL;
    mr_masks *masks = NULL, *small_masks = NULL;
    mr_masks_params mp;
    mr_session_params sp;
    mr_report_params rp;
    mr_volume_buffer desc;
    mr_report *ref = NULL, *r = NULL, *const sentinel = (mr_report *)(void *)&rp;
    state st;
    pthread_t thread;
    int quick;
    size_t n_regions, i;
    char *ref_text = NULL, *ref_regions[6] = {0};
    static int16_t voxels[16 * 16 * 8];
    static uint8_t labels[16 * 16 * 8];

    if (argc < 4) {
        fprintf(stderr, "usage: %s PACKAGE CT LABELS [quick]\n", argv[0]);
        return 2;
    }
    quick = argc > 4 && strcmp(argv[4], "quick") == 0;
    n_regions = quick ? 1 : 6;
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
    CHECK_STATUS(mr_model_load(argv[1], NULL, &model), MR_OK);
    CHECK_STATUS(mr_volume_load(argv[2], &ct), MR_OK);
    CHECK_STATUS(mr_masks_params_default(&mp), MR_OK);
    CHECK_STATUS(mr_masks_load(argv[3], &mp, &masks), MR_OK);
    CHECK_STATUS(mr_session_params_default(&sp), MR_OK);
    sp.threads = 2;
    CHECK_STATUS(mr_session_create(model, &sp, &s), MR_OK);
    if (!model || !ct || !masks || !s) return 1;

    /* A full report with both callbacks. */
    state_init(&st, s);
    CHECK_STATUS(mr_report_params_default(&rp), MR_OK);
    CHECK(rp.struct_size == sizeof rp && rp.max_new_tokens == 0 && rp.regions == NULL && rp.batch_regions == -1);
    rp.max_new_tokens = MAX_NEW_TOKENS;
    rp.regions = quick ? "lung" : NULL;
    rp.on_progress = on_progress;
    rp.on_token = on_token;
    rp.user_data = &st;
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &ref), MR_OK);
    if (!ref) return 1;
    CHECK(st.busy_status == MR_ERR_BUSY);
    CHECK(!st.bad_token);
    check_events(&st, n_regions);
    check_report(ref, n_regions, &st);
    ref_text = fetch(get_text, ref, 0);
    for (i = 0; i < n_regions; i++) ref_regions[i] = fetch(mr_report_region_text, ref, i);
    state_destroy(&st);

    /* The progress callback cancels when the encoder starts: MR_ERR_CANCELLED, out untouched. */
    state_init(&st, s);
    st.stop_at_stage = MR_STAGE_ENCODER;
    rp.user_data = &st;
    r = sentinel;
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_CANCELLED);
    CHECK(r == sentinel);
    CHECK(st.n_events == 3 && st.n_tokens == 0);
    state_destroy(&st);

    /* The token callback cancels at the first token: no token callback follows. */
    state_init(&st, s);
    st.stop_after_tokens = 1;
    rp.user_data = &st;
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_CANCELLED);
    CHECK(r == sentinel);
    CHECK(st.stopped && st.n_tokens == 1 && st.tokens_after_stop == 0);
    state_destroy(&st);

    /* mr_session_cancel from another thread while the report runs. */
    state_init(&st, s);
    st.use_canceller = 1;
    rp.user_data = &st;
    CHECK(pthread_create(&thread, NULL, cancel_thread, &st) == 0);
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_CANCELLED);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(r == sentinel && st.cancel_sent && st.n_tokens == 0);
    state_destroy(&st);
    rp.on_progress = NULL;
    rp.on_token = NULL;
    rp.user_data = NULL;

    /* Bad input: NULLs, an unknown region key (named), bad params, masks on another grid, a
     * context too small for the prompts. */
    CHECK_STATUS(mr_session_generate_report(NULL, ct, masks, &rp, &r), MR_ERR_NULL_POINTER);
    CHECK(strstr(mr_last_error_message(), "session") != NULL);
    CHECK_STATUS(mr_session_generate_report(s, NULL, masks, &rp, &r), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_session_generate_report(s, ct, NULL, &rp, &r), MR_ERR_NULL_POINTER);
    CHECK(strstr(mr_last_error_message(), "masks") != NULL);
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, NULL), MR_ERR_NULL_POINTER);
    rp.regions = "lung,no_such_region";
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "no_such_region") != NULL);
    rp.regions = "lung,,osseous";
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_INVALID_ARGUMENT);
    rp.regions = NULL;
    rp.batch_regions = 7;
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "batch_regions") != NULL);
    rp.batch_regions = -1;
    rp.struct_size = 8;
    CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mr_last_error_message(), "struct_size") != NULL);
    CHECK_STATUS(mr_report_params_default(&rp), MR_OK);
    rp.max_new_tokens = MAX_NEW_TOKENS;
    CHECK_STATUS(mr_volume_buffer_default(&desc), MR_OK);
    desc.dtype = MR_DTYPE_I16;
    desc.data = voxels;
    desc.data_len = sizeof voxels;
    desc.dims[0] = 16;
    desc.dims[1] = 16;
    desc.dims[2] = 8;
    desc.spacing[0] = desc.spacing[1] = desc.spacing[2] = 2.0;
    desc.coordinates = MR_COORDS_RAS;
    CHECK_STATUS(mr_volume_from_buffer(&desc, &small_ct), MR_OK);
    desc.dtype = MR_DTYPE_U8;
    desc.data = labels;
    desc.data_len = sizeof labels;
    for (i = 0; i < sizeof labels; i++) labels[i] = (uint8_t)(i % 3 == 0 ? 51 : 0);
    CHECK_STATUS(mr_masks_from_buffer(&desc, &mp, &small_masks), MR_OK);
    CHECK_STATUS(mr_session_generate_report(s, small_ct, masks, &rp, &r), MR_ERR_SHAPE);
    CHECK_STATUS(mr_session_generate_report(s, ct, small_masks, &rp, &r), MR_ERR_SHAPE);
    CHECK(r == sentinel);
    { /* a session whose context cannot hold a region prompt */
        mr_session *short_ctx = NULL;
        mr_session_params sp2;
        CHECK_STATUS(mr_session_params_default(&sp2), MR_OK);
        sp2.context = 64;
        sp2.threads = 1;
        CHECK_STATUS(mr_session_create(model, &sp2, &short_ctx), MR_OK);
        CHECK_STATUS(mr_session_generate_report(short_ctx, ct, masks, &rp, &r), MR_ERR_INVALID_ARGUMENT);
        CHECK(strstr(mr_last_error_message(), "context") != NULL);
        CHECK(r == sentinel);
        mr_session_free(short_ctx);
    }
    CHECK_STATUS(mr_report_params_default(NULL), MR_ERR_NULL_POINTER);
    mr_report_free(NULL);

    /* The session still works: two regions in another order, one by one, same texts. */
    if (!quick) {
        rp.regions = "mediastinum, lung";
        rp.batch_regions = 0;
        CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_OK);
        if (r != sentinel) {
            char *k0 = fetch(mr_report_region_key, r, 0), *t0 = fetch(mr_report_region_text, r, 0);
            char *t1 = fetch(mr_report_region_text, r, 1);
            check_report(r, 2, NULL);
            CHECK(k0 && strcmp(k0, "mediastinum") == 0);
            CHECK(t0 && strcmp(t0, ref_regions[2]) == 0);
            CHECK(t1 && strcmp(t1, ref_regions[0]) == 0);
            free(k0);
            free(t0);
            free(t1);
            mr_report_free(r);
        }
    } else {
        rp.regions = "lung";
        CHECK_STATUS(mr_session_generate_report(s, ct, masks, &rp, &r), MR_OK);
        if (r != sentinel) {
            char *t = fetch(get_text, r, 0);
            CHECK(t && strcmp(t, ref_text) == 0);
            free(t);
            mr_report_free(r);
        }
    }

    /* One model, 4 sessions on 4 threads at once: every text equals the single-thread run's. */
    if (!quick) {
        pthread_t threads[N_THREADS];
        worker_arg args[N_THREADS];
        for (i = 0; i < N_THREADS; i++) {
            args[i].model = model;
            args[i].ct = ct;
            args[i].masks = masks;
            args[i].want_text = ref_text;
            args[i].want_regions = ref_regions;
            args[i].n_regions = n_regions;
            args[i].ok = 0;
            CHECK(pthread_create(&threads[i], NULL, worker, &args[i]) == 0);
        }
        for (i = 0; i < N_THREADS; i++) {
            CHECK(pthread_join(threads[i], NULL) == 0);
            CHECK(args[i].ok);
        }
    }

    for (i = 0; i < n_regions; i++) free(ref_regions[i]);
    free(ref_text);
    mr_report_free(ref);
    mr_masks_free(small_masks);
    mr_masks_free(masks);
    mr_volume_free(small_ct);
    mr_volume_free(ct);
    mr_session_free(s);
    mr_model_free(model);
    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
