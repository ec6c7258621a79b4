/* Sessions and the tokenizer from C: tokenize/detokenize, prefill + logits + next token,
 * streaming generation, stop by callback, cancel and busy detection from inside a running call,
 * determinism, bad input, and a session outliving mr_model_free. argv[1]: a tiny synthetic
 * package (byte-level tokenizer). Run by tests/c_session.rs against both libraries and under
 * valgrind. */
#include "medregion.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAX_TOKENS 64

typedef struct {
    mr_session *session;
    uint32_t tokens[MAX_TOKENS];
    size_t n;
    size_t stop_after;   /* return non-zero once this many tokens arrived (0 = never) */
    int cancel_at;       /* call mr_session_cancel when this many tokens arrived (0 = never) */
    mr_status busy_status; /* what a nested mr_session_reset returned */
    size_t text_bytes;
} collector;

static int32_t collect(void *user, uint32_t token, const char *piece, size_t len) {
    collector *c = (collector *)user;
    (void)piece;
    if (c->n < MAX_TOKENS) c->tokens[c->n] = token;
    c->n++;
    c->text_bytes += len;
    c->busy_status = mr_session_reset(c->session); /* must be refused: the call is running */
    if (c->cancel_at > 0 && c->n == (size_t)c->cancel_at) mr_session_cancel(c->session);
    return (c->stop_after > 0 && c->n >= c->stop_after) ? 1 : 0;
}

static uint32_t argmax(const float *v, size_t n) {
    size_t i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (uint32_t)best;
}

int main(int argc, char **argv) {
    mr_model *model = NULL;
    mr_session *s = NULL, *small = NULL;
    mr_session_params sp;
    mr_generate_params gp;
    mr_generate_result res;
    collector c1, c2;
    uint32_t ids[256], token = 0, tok_loop[8], bad_id = 999999;
    size_t n_ids = 0, vocab = 0, needed = 0, i;
    float *logits;
    char text[256];
    uint32_t len = 0, cap = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s PACKAGE\n", argv[0]);
        return 2;
    }
    CHECK_STATUS(mr_init(MR_ABI_VERSION), MR_OK);
    CHECK_STATUS(mr_model_load(argv[1], NULL, &model), MR_OK);
    if (!model) return 1;

    /* Tokenizer: a size query, then the ids; plain text keeps "<mask>" as bytes. */
    CHECK_STATUS(mr_tokenize(model, "hello <mask>", 1, 1, NULL, 0, &n_ids), MR_OK);
    CHECK(n_ids == 1 + 6 + 1); /* BOS, "hello ", <mask> */
    CHECK_STATUS(mr_tokenize(model, "hello <mask>", 1, 1, ids, 2, &n_ids), MR_ERR_BUFFER_TOO_SMALL);
    CHECK(n_ids == 8);
    CHECK_STATUS(mr_tokenize(model, "hello <mask>", 1, 1, ids, 256, &n_ids), MR_OK);
    CHECK(ids[1] == 'h' && ids[6] == ' ' && ids[7] >= 256);
    CHECK_STATUS(mr_tokenize(model, "hello <mask>", 0, 0, ids, 256, &n_ids), MR_OK);
    CHECK(n_ids == 12 && ids[6] == '<');
    CHECK_STATUS(mr_detokenize(model, ids, n_ids, NULL, 0, &needed), MR_OK);
    CHECK(needed == 13);
    CHECK_STATUS(mr_detokenize(model, ids, n_ids, text, sizeof text, &needed), MR_OK);
    CHECK(strcmp(text, "hello <mask>") == 0);
    CHECK_STATUS(mr_tokenize(model, "\xff\xfe", 0, 0, ids, 256, &n_ids), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_tokenize(NULL, "x", 0, 0, ids, 256, &n_ids), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_detokenize(model, &bad_id, 1, text, sizeof text, &needed), MR_ERR_INVALID_ARGUMENT);

    /* A session; params with a too small struct_size are refused. */
    CHECK_STATUS(mr_session_params_default(&sp), MR_OK);
    sp.struct_size = 4;
    CHECK_STATUS(mr_session_create(model, &sp, &s), MR_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);
    CHECK_STATUS(mr_session_params_default(&sp), MR_OK);
    sp.context = 128;
    sp.threads = 1;
    CHECK_STATUS(mr_session_create(model, &sp, &s), MR_OK);
    if (!s) return 1;
    CHECK_STATUS(mr_session_length(s, &len, &cap), MR_OK);
    CHECK(len == 0 && cap == 128);

    /* Nothing fed yet: no logits, no next token. */
    CHECK_STATUS(mr_session_logits(s, NULL, 0, &vocab), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_session_next_token(s, NULL, &token), MR_ERR_INVALID_ARGUMENT);

    /* Prefill, logits, greedy next token == argmax of the logits. */
    CHECK_STATUS(mr_tokenize(model, "The lungs are", 1, 0, ids, 256, &n_ids), MR_OK);
    CHECK_STATUS(mr_session_prefill(s, ids, n_ids), MR_OK);
    CHECK_STATUS(mr_session_logits(s, NULL, 0, &vocab), MR_OK);
    CHECK(vocab > 256);
    logits = (float *)malloc(vocab * sizeof(float));
    CHECK_STATUS(mr_session_logits(s, logits, vocab - 1, &vocab), MR_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(mr_session_logits(s, logits, vocab, &vocab), MR_OK);
    for (i = 0; i < vocab; i++) CHECK(isfinite(logits[i]));
    CHECK_STATUS(mr_session_next_token(s, NULL, &token), MR_OK);
    CHECK(token == argmax(logits, vocab));
    tok_loop[0] = token;
    for (i = 1; i < 8; i++) CHECK_STATUS(mr_session_next_token(s, NULL, &tok_loop[i]), MR_OK);
    CHECK_STATUS(mr_session_length(s, &len, &cap), MR_OK);
    CHECK(len == n_ids + 8);

    /* Bad input: out-of-vocabulary ids, zero tokens, bad sampling values, non-UTF-8 prompt. */
    CHECK_STATUS(mr_session_prefill(s, &bad_id, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_session_prefill(s, ids, 0), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_session_prefill(s, NULL, 3), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_generate_params_default(&gp), MR_OK);
    gp.temperature = NAN;
    CHECK_STATUS(mr_session_next_token(s, &gp, &token), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_session_generate(s, "x", &gp, NULL, NULL, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_generate_params_default(&gp), MR_OK);
    gp.max_new_tokens = 0;
    CHECK_STATUS(mr_session_generate(s, "x", &gp, NULL, NULL, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_generate_params_default(&gp), MR_OK);
    gp.top_p = 1.5f;
    CHECK_STATUS(mr_session_generate(s, "x", &gp, NULL, NULL, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_generate_params_default(&gp), MR_OK);
    CHECK_STATUS(mr_session_generate(s, "\xc3\x28", &gp, NULL, NULL, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mr_session_generate(NULL, "x", &gp, NULL, NULL, NULL), MR_ERR_NULL_POINTER);
    CHECK_STATUS(mr_session_generate(s, NULL, &gp, NULL, NULL, NULL), MR_ERR_NULL_POINTER);
    res.struct_size = 3;
    CHECK_STATUS(mr_session_generate(s, "x", &gp, NULL, NULL, &res), MR_ERR_INVALID_ARGUMENT);

    /* Streaming generation equals the prefill + next-token loop (greedy), twice. */
    CHECK_STATUS(mr_session_reset(s), MR_OK);
    CHECK_STATUS(mr_session_length(s, &len, &cap), MR_OK);
    CHECK(len == 0);
    memset(&c1, 0, sizeof c1);
    c1.session = s;
    gp.max_new_tokens = 8;
    CHECK_STATUS(mr_generate_result_default(&res), MR_OK);
    CHECK_STATUS(mr_session_generate(s, "The lungs are", &gp, collect, &c1, &res), MR_OK);
    CHECK(res.n_generated == c1.n && c1.n >= 1 && c1.n <= 8);
    CHECK(res.n_prompt_tokens == n_ids);
    CHECK(res.stop_reason == MR_STOP_MAX_TOKENS || res.stop_reason == MR_STOP_TOKEN);
    CHECK(c1.busy_status == MR_ERR_BUSY);
    for (i = 0; i < c1.n && i < 8; i++) CHECK(c1.tokens[i] == tok_loop[i]);
    CHECK_STATUS(mr_session_reset(s), MR_OK);
    memset(&c2, 0, sizeof c2);
    c2.session = s;
    CHECK_STATUS(mr_session_generate(s, "The lungs are", &gp, collect, &c2, &res), MR_OK);
    CHECK(c2.n == c1.n && memcmp(c1.tokens, c2.tokens, c1.n * sizeof(uint32_t)) == 0);

    /* A callback returning non-zero stops; a cancel from inside a running call stops it too. */
    CHECK_STATUS(mr_session_reset(s), MR_OK);
    memset(&c2, 0, sizeof c2);
    c2.session = s;
    c2.stop_after = 2;
    gp.max_new_tokens = 32;
    gp.temperature = 0.8f;
    gp.seed = 11;
    CHECK_STATUS(mr_session_generate(s, "Heart", &gp, collect, &c2, &res), MR_OK);
    CHECK(res.stop_reason == MR_STOP_CALLBACK || res.stop_reason == MR_STOP_TOKEN);
    CHECK(res.stop_reason != MR_STOP_CALLBACK || (c2.n == 2 && res.n_generated == 2));
    CHECK_STATUS(mr_session_reset(s), MR_OK);
    memset(&c2, 0, sizeof c2);
    c2.session = s;
    c2.cancel_at = 1;
    CHECK_STATUS(mr_session_generate(s, "Heart", &gp, collect, &c2, &res), MR_ERR_CANCELLED);
    CHECK(res.stop_reason == MR_STOP_CANCELLED || res.stop_reason == MR_STOP_TOKEN);

    /* A prompt longer than the context is refused. */
    CHECK_STATUS(mr_session_params_default(&sp), MR_OK);
    sp.context = 16;
    sp.threads = 1;
    CHECK_STATUS(mr_session_create(model, &sp, &small), MR_OK);
    CHECK(mr_session_generate(small, "a prompt of well over sixteen bytes", &gp, NULL, NULL, NULL) != MR_OK);
    CHECK(strlen(mr_last_error_message()) > 0);

    /* Activations. A version-1 struct (16 bytes, before `activations`) is accepted and gets
     * the default, int8: the logits of `s` above (same prompt, one thread), bit for bit, even
     * with garbage past its end. MR_ACTIVATIONS_F32 gives other finite logits on these q8_0
     * weights; an unknown value is refused, naming the field. */
    {
        mr_session *v1 = NULL, *exact = NULL;
        float *other = (float *)malloc(vocab * sizeof(float));
        CHECK_STATUS(mr_session_params_default(&sp), MR_OK);
        CHECK(sp.struct_size == sizeof sp && sp.activations == MR_ACTIVATIONS_INT8);
        sp.context = 128;
        sp.threads = 1;
        sp.struct_size = 16;
        sp.activations = 7;
        CHECK_STATUS(mr_session_create(model, &sp, &v1), MR_OK);
        CHECK_STATUS(mr_session_prefill(v1, ids, n_ids), MR_OK);
        CHECK_STATUS(mr_session_logits(v1, other, vocab, &vocab), MR_OK);
        CHECK(memcmp(other, logits, vocab * sizeof(float)) == 0);
        sp.struct_size = sizeof sp;
        CHECK_STATUS(mr_session_create(model, &sp, &exact), MR_ERR_INVALID_ARGUMENT);
        CHECK(exact == NULL && strstr(mr_last_error_message(), "activations") != NULL);
        sp.activations = MR_ACTIVATIONS_F32;
        CHECK_STATUS(mr_session_create(model, &sp, &exact), MR_OK);
        CHECK_STATUS(mr_session_prefill(exact, ids, n_ids), MR_OK);
        CHECK_STATUS(mr_session_logits(exact, other, vocab, &vocab), MR_OK);
        for (i = 0; i < vocab; i++) CHECK(isfinite(other[i]));
        CHECK(memcmp(other, logits, vocab * sizeof(float)) != 0);
        mr_session_free(exact);
        mr_session_free(v1);
        free(other);
    }

    /* The sessions keep the model alive after mr_model_free. */
    mr_model_free(model);
    CHECK_STATUS(mr_session_reset(s), MR_OK);
    gp.temperature = 0.0f;
    gp.max_new_tokens = 4;
    CHECK_STATUS(mr_session_generate(s, "The lungs are", &gp, NULL, NULL, &res), MR_OK);
    mr_session_free(small);
    mr_session_free(s);
    mr_session_free(NULL);
    CHECK_STATUS(mr_session_cancel(NULL), MR_ERR_NULL_POINTER);
    free(logits);

    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("session: ok\n");
    return 0;
}
