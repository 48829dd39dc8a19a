/*
 * misuse.c - every kind of bad call the C API must survive with an error code.
 *
 *   misuse MODEL.gguf NOT_A_MODEL_FILE
 *
 * NULL handles and pointers, bad paths and files, invalid UTF-8, out-of-range tokens and
 * positions, context overflow, bad struct sizes and parameters, too-small buffers, freeing NULL.
 * Prints each failed check and exits 1 if any failed; run under valgrind by the tests.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitnet.h"

static int n_checks = 0;
static int n_failed = 0;

#define EXPECT(cond)                                                          \
    do {                                                                      \
        n_checks++;                                                           \
        if (!(cond)) {                                                        \
            n_failed++;                                                       \
            fprintf(stderr, "misuse.c:%d: check failed: %s\n", __LINE__, #cond); \
        }                                                                     \
    } while (0)

/* The call returns `code` and leaves a non-empty message. */
#define EXPECT_STATUS(call, code)                                                          \
    do {                                                                                   \
        bitnet_status st_ = (call);                                                        \
        n_checks++;                                                                        \
        if (st_ != (code) || ((code) != BITNET_OK && bitnet_last_error()[0] == '\0')) {    \
            n_failed++;                                                                    \
            fprintf(stderr, "misuse.c:%d: %s returned %s, expected %s (last error: %s)\n", \
                    __LINE__, #call, bitnet_status_str(st_), bitnet_status_str(code),      \
                    bitnet_last_error());                                                  \
        }                                                                                  \
    } while (0)

static void version_and_errors(void) {
    EXPECT(bitnet_version() != NULL && strlen(bitnet_version()) > 0);
    EXPECT(bitnet_api_version() == BITNET_API_VERSION);
    EXPECT(strstr(bitnet_system_info(), "kernel = ") != NULL);
    EXPECT(strcmp(bitnet_status_str(BITNET_ERR_TOKEN), "BITNET_ERR_TOKEN") == 0);
    EXPECT(strcmp(bitnet_status_str(BITNET_ERR_SEQ_ID), "BITNET_ERR_SEQ_ID") == 0);
    EXPECT(strcmp(bitnet_status_str(12345), "BITNET_ERR_UNKNOWN") == 0);
    EXPECT(bitnet_last_error() != NULL);
}

static void loading(const char *garbage) {
    struct bitnet_model *m = (struct bitnet_model *)&m; /* must be reset to NULL on failure */
    EXPECT_STATUS(bitnet_model_load(NULL, NULL, &m), BITNET_ERR_NULL_ARG);
    EXPECT(m == NULL);
    EXPECT_STATUS(bitnet_model_load("/nonexistent/model.gguf", NULL, NULL), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_model_load("/nonexistent/model.gguf", NULL, &m), BITNET_ERR_IO);
    EXPECT(strstr(bitnet_last_error(), "/nonexistent/model.gguf") != NULL);
    EXPECT_STATUS(bitnet_model_load(garbage, NULL, &m), BITNET_ERR_MODEL);
    EXPECT(m == NULL);

    struct bitnet_model_params p = bitnet_model_default_params();
    EXPECT(p.struct_size == sizeof p && p.n_threads == 0 && p.tokenizer_json == NULL);
    p.n_threads = -3;
    EXPECT_STATUS(bitnet_model_load(garbage, &p, &m), BITNET_ERR_INVALID_ARG);
    p = bitnet_model_default_params();
    p.struct_size = 0; /* e.g. a struct the host forgot to initialise */
    EXPECT_STATUS(bitnet_model_load(garbage, &p, &m), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_model_params_init(NULL, sizeof p), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_model_params_init(&p, 3), BITNET_ERR_INVALID_ARG);
}

/* A host built against a newer header: the library accepts unknown fields only when zero. */
static void newer_host(const char *model_path) {
    struct {
        struct bitnet_model_params p;
        uint64_t future_field;
    } big;
    EXPECT_STATUS(bitnet_model_params_init(&big.p, sizeof big), BITNET_OK);
    EXPECT(big.p.struct_size == sizeof big && big.future_field == 0);
    struct bitnet_model *m = NULL;
    big.future_field = 7;
    EXPECT_STATUS(bitnet_model_load(model_path, &big.p, &m), BITNET_ERR_INVALID_ARG);
    big.future_field = 0;
    EXPECT_STATUS(bitnet_model_load(model_path, &big.p, &m), BITNET_OK);
    bitnet_model_free(m);
}

static void null_getters(void) {
    EXPECT(bitnet_model_n_vocab(NULL) == -1);
    EXPECT(bitnet_model_n_ctx_train(NULL) == -1);
    EXPECT(bitnet_model_n_embd(NULL) == -1);
    EXPECT(bitnet_model_n_params(NULL) == 0);
    EXPECT(bitnet_model_architecture(NULL) == NULL);
    EXPECT(bitnet_model_desc(NULL) == NULL);
    EXPECT(bitnet_token_bos(NULL) == BITNET_TOKEN_NULL);
    EXPECT(!bitnet_token_is_eog(NULL, 0));
    EXPECT(bitnet_n_ctx(NULL) == 0);
    EXPECT(bitnet_kv_cache_n_tokens(NULL) == -1);
    EXPECT(strstr(bitnet_last_error(), "NULL") != NULL);
}

static void vocabulary(const struct bitnet_model *m) {
    const int32_t n_vocab = bitnet_model_n_vocab(m);
    bitnet_token ids[64];
    int32_t n = -1;
    EXPECT_STATUS(bitnet_tokenize(NULL, "hi", -1, ids, 64, true, true, &n), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_tokenize(m, NULL, -1, ids, 64, true, true, &n), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_tokenize(m, "ok \xff\xfe", -1, ids, 64, true, true, &n),
                  BITNET_ERR_INVALID_UTF8);
    EXPECT_STATUS(bitnet_tokenize(m, "hello", 5, ids, -1, true, true, &n), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_tokenize(m, "hello world", -1, ids, 1, true, true, &n),
                  BITNET_ERR_BUFFER_TOO_SMALL);
    EXPECT(n > 1);
    EXPECT_STATUS(bitnet_tokenize(m, "hello world", -1, ids, n, true, true, &n), BITNET_OK);
    /* text_len counts bytes; the NUL inside is part of the text, not its end */
    EXPECT_STATUS(bitnet_tokenize(m, "a\0b", 3, ids, 64, false, true, &n), BITNET_OK);

    char buf[8];
    EXPECT_STATUS(bitnet_token_to_piece(m, -1, buf, sizeof buf, true, &n), BITNET_ERR_TOKEN);
    EXPECT_STATUS(bitnet_token_to_piece(m, n_vocab, buf, sizeof buf, true, &n), BITNET_ERR_TOKEN);
    EXPECT(strstr(bitnet_last_error(), "outside the vocabulary") != NULL);
    const bitnet_token bos = bitnet_token_bos(m);
    EXPECT(bos >= 0 && bos < n_vocab);
    EXPECT_STATUS(bitnet_token_to_piece(m, bos, NULL, 0, true, &n), BITNET_ERR_BUFFER_TOO_SMALL);
    EXPECT(n == (int32_t)strlen("<|begin_of_text|>"));
    EXPECT_STATUS(bitnet_token_to_piece(m, bos, buf, sizeof buf, true, &n), BITNET_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(bitnet_token_to_piece(m, bos, buf, sizeof buf, false, &n), BITNET_OK);
    EXPECT(n == 0 && buf[0] == '\0');
    EXPECT_STATUS(bitnet_token_to_piece(m, bos, buf, -1, false, &n), BITNET_ERR_INVALID_ARG);

    const bitnet_token bad[2] = {1, n_vocab + 5};
    EXPECT_STATUS(bitnet_detokenize(m, bad, 2, buf, sizeof buf, false, false, &n), BITNET_ERR_TOKEN);
    EXPECT_STATUS(bitnet_detokenize(m, NULL, 2, buf, sizeof buf, false, false, &n), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_detokenize(m, NULL, 0, buf, sizeof buf, false, false, &n), BITNET_OK);
    EXPECT(n == 0);

    EXPECT(!bitnet_token_is_eog(m, -5));
    EXPECT(!bitnet_token_is_eog(m, n_vocab));
    EXPECT(bitnet_token_is_eog(m, bitnet_token_eos(m)));
    EXPECT(!bitnet_token_is_eog(m, bos));

    struct bitnet_chat_message msgs[2] = {{"user", "Hi"}, {"assistant", NULL}};
    EXPECT_STATUS(bitnet_chat_apply_template(m, NULL, 1, true, buf, sizeof buf, &n), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_chat_apply_template(m, msgs, 2, true, buf, sizeof buf, &n), BITNET_ERR_NULL_ARG);
    char chat[256];
    EXPECT_STATUS(bitnet_chat_apply_template(m, msgs, 1, true, chat, sizeof chat, &n), BITNET_OK);
    EXPECT(strstr(chat, "Hi") != NULL && (size_t)n == strlen(chat));
}

static void contexts(const struct bitnet_model *m) {
    struct bitnet_context *ctx = (struct bitnet_context *)&ctx;
    EXPECT_STATUS(bitnet_context_init(NULL, NULL, &ctx), BITNET_ERR_NULL_ARG);
    EXPECT(ctx == NULL);
    EXPECT_STATUS(bitnet_context_init(m, NULL, NULL), BITNET_ERR_NULL_ARG);
    struct bitnet_context_params p = bitnet_context_default_params();
    p.n_ctx = (uint32_t)bitnet_model_n_ctx_train(m) + 1;
    EXPECT_STATUS(bitnet_context_init(m, &p, &ctx), BITNET_ERR_INVALID_ARG);
    p = bitnet_context_default_params();
    p.type_kv = 7;
    EXPECT_STATUS(bitnet_context_init(m, &p, &ctx), BITNET_ERR_INVALID_ARG);
    p = bitnet_context_default_params();
    p.n_ctx = 8;
    EXPECT_STATUS(bitnet_context_init(m, &p, &ctx), BITNET_OK);
    EXPECT(bitnet_n_ctx(ctx) == 8);

    const float *logits = NULL;
    EXPECT_STATUS(bitnet_get_logits(ctx, &logits), BITNET_ERR_NO_LOGITS);
    EXPECT_STATUS(bitnet_get_logits(ctx, NULL), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_get_logits(NULL, &logits), BITNET_ERR_NULL_ARG);

    const int32_t n_vocab = bitnet_model_n_vocab(m);
    bitnet_token toks[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    bitnet_pos pos[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    int8_t want[10] = {1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    struct bitnet_batch b = bitnet_batch_get_one(toks, 3);
    EXPECT_STATUS(bitnet_decode(NULL, &b), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_decode(ctx, NULL), BITNET_ERR_NULL_ARG);
    b.n_tokens = 0;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_INVALID_ARG);
    b.n_tokens = -2;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_INVALID_ARG);
    b = bitnet_batch_get_one(NULL, 2);
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_NULL_ARG);
    bitnet_token bad_tok[2] = {1, -1};
    b = bitnet_batch_get_one(bad_tok, 2);
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_TOKEN);
    bad_tok[1] = n_vocab;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_TOKEN);
    b = bitnet_batch_get_one(toks, 3);
    b.pos = pos + 2; /* starts at 2 but nothing is cached */
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_POSITION);
    bitnet_pos gap[3] = {0, 1, 3};
    b.pos = gap;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_POSITION);
    bitnet_pos negative[3] = {-1, 0, 1};
    b.pos = negative;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_POSITION);
    b = bitnet_batch_get_one(toks, 9); /* n_ctx is 8 */
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_CONTEXT_FULL);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 0);

    /* Positions 0..2 with logits for tokens 0 and 2 only. */
    b = bitnet_batch_get_one(toks, 3);
    b.pos = pos;
    b.logits = want;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_OK);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 3);
    const float *first = NULL, *last = NULL;
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 0, &first), BITNET_OK);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 1, &logits), BITNET_ERR_NO_LOGITS);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 3, &logits), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, -4, &logits), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, -1, &last), BITNET_OK);
    EXPECT_STATUS(bitnet_get_logits(ctx, &logits), BITNET_OK);
    EXPECT(logits == last && first != last);
    int finite = 1;
    for (int32_t i = 0; i < n_vocab; i++) {
        finite &= isfinite(last[i]) && isfinite(first[i]);
    }
    EXPECT(finite);

    /* 6 more tokens would need positions 3..8 in a context of 8. */
    b = bitnet_batch_get_one(toks, 6);
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_ERR_CONTEXT_FULL);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 3);
    EXPECT_STATUS(bitnet_get_logits(ctx, &logits), BITNET_ERR_NO_LOGITS);
    /* Rewind: decoding at position 1 forgets positions 1.. first. */
    b = bitnet_batch_get_one(toks, 7);
    b.pos = pos + 1;
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_OK);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 8);

    EXPECT_STATUS(bitnet_kv_cache_truncate(ctx, -1), BITNET_ERR_POSITION);
    EXPECT_STATUS(bitnet_kv_cache_truncate(ctx, 100), BITNET_OK);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 8);
    EXPECT_STATUS(bitnet_kv_cache_truncate(ctx, 2), BITNET_OK);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 2);
    EXPECT_STATUS(bitnet_kv_cache_clear(ctx), BITNET_OK);
    EXPECT_STATUS(bitnet_kv_cache_clear(NULL), BITNET_ERR_NULL_ARG);
    EXPECT(bitnet_kv_cache_n_tokens(ctx) == 0);
    EXPECT_STATUS(bitnet_get_logits(ctx, &logits), BITNET_ERR_NO_LOGITS);

    /* Samplers. */
    struct bitnet_sampler *s = (struct bitnet_sampler *)&s;
    struct bitnet_sampler_params sp = bitnet_sampler_default_params();
    EXPECT(sp.temperature == 0.0f && sp.top_p == 1.0f && sp.seed == BITNET_DEFAULT_SEED);
    sp.temperature = NAN;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_ERR_INVALID_ARG);
    EXPECT(s == NULL);
    sp = bitnet_sampler_default_params();
    sp.top_p = 0.0f;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_ERR_INVALID_ARG);
    sp.top_p = 1.5f;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_ERR_INVALID_ARG);
    sp = bitnet_sampler_default_params();
    sp.repeat_penalty = 0.0f;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_ERR_INVALID_ARG);
    sp = bitnet_sampler_default_params();
    sp.repeat_last_n = -1;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_sampler_init(&sp, NULL), BITNET_ERR_NULL_ARG);
    sp = bitnet_sampler_default_params();
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.9f;
    sp.seed = 42;
    EXPECT_STATUS(bitnet_sampler_init(&sp, &s), BITNET_OK);
    bitnet_token t = -7;
    EXPECT_STATUS(bitnet_sampler_sample(s, ctx, -1, &t), BITNET_ERR_NO_LOGITS);
    EXPECT(t == -7);
    b = bitnet_batch_get_one(toks, 2);
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_OK);
    EXPECT_STATUS(bitnet_sampler_sample(NULL, ctx, -1, &t), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_sampler_sample(s, NULL, -1, &t), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_sampler_sample(s, ctx, -1, NULL), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_sampler_sample(s, ctx, 0, &t), BITNET_ERR_NO_LOGITS);
    EXPECT_STATUS(bitnet_sampler_sample(s, ctx, 5, &t), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_sampler_sample(s, ctx, -1, &t), BITNET_OK);
    EXPECT(t >= 0 && t < n_vocab);
    /* The same seed replays the same draws. */
    bitnet_token draws[2][8];
    for (int round = 0; round < 2; round++) {
        EXPECT_STATUS(bitnet_sampler_reset(s), BITNET_OK);
        for (int i = 0; i < 8; i++) {
            EXPECT_STATUS(bitnet_sampler_sample(s, ctx, -1, &draws[round][i]), BITNET_OK);
        }
    }
    EXPECT(memcmp(draws[0], draws[1], sizeof draws[0]) == 0);
    EXPECT_STATUS(bitnet_sampler_reset(NULL), BITNET_ERR_NULL_ARG);
    bitnet_sampler_free(s);

    /* Batches allocated by the library. */
    struct bitnet_batch owned;
    EXPECT_STATUS(bitnet_batch_init(0, &owned), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_batch_init(4, NULL), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_batch_init(4, &owned), BITNET_OK);
    EXPECT(owned.n_tokens == 0 && owned.token != NULL && owned.pos != NULL && owned.logits != NULL);
    for (int i = 0; i < 4; i++) {
        owned.token[i] = toks[i];
        owned.pos[i] = 2 + i;
        owned.logits[i] = 1;
    }
    owned.n_tokens = 4;
    EXPECT_STATUS(bitnet_decode(ctx, &owned), BITNET_OK);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 1, &logits), BITNET_OK);
    bitnet_batch_free(&owned);
    EXPECT(owned.token == NULL && owned.pos == NULL && owned.logits == NULL);
    bitnet_batch_free(&owned); /* its arrays are NULL now: a no-op */
    bitnet_batch_free(NULL);

    bitnet_free(ctx);
}

/* API 2: several sequences in one context. */
static void sequences(const struct bitnet_model *m) {
    struct bitnet_context_params p = bitnet_context_default_params();
    EXPECT(p.n_seq_max == 1 && p.n_batch == 0);
    p.n_seq_max = 0;
    struct bitnet_context *ctx = NULL;
    EXPECT_STATUS(bitnet_context_init(m, &p, &ctx), BITNET_ERR_INVALID_ARG);
    p = bitnet_context_default_params();
    p.n_ctx = 32;
    p.n_seq_max = 2;
    p.n_batch = 8;
    EXPECT_STATUS(bitnet_context_init(m, &p, &ctx), BITNET_OK);
    EXPECT(bitnet_n_seq_max(ctx) == 2 && bitnet_n_batch(ctx) == 8);
    EXPECT(bitnet_n_seq_max(NULL) == 0);

    bitnet_token toks[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    bitnet_pos pos[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    bitnet_seq_id seq[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    struct bitnet_seq_batch b = {3, toks, pos, seq, NULL};
    EXPECT_STATUS(bitnet_decode_seqs(NULL, &b), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_decode_seqs(ctx, NULL), BITNET_ERR_NULL_ARG);
    b.seq_id = NULL;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_ERR_NULL_ARG);
    b.seq_id = seq;
    b.n_tokens = 9; /* n_batch is 8 */
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_ERR_INVALID_ARG);
    b.n_tokens = 3;
    bitnet_seq_id bad_seq[3] = {0, 2, 0};
    b.seq_id = bad_seq;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_ERR_SEQ_ID);
    bad_seq[1] = -1;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_ERR_SEQ_ID);
    b.seq_id = seq;
    bitnet_pos gap[3] = {0, 2, 3};
    b.pos = gap;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_ERR_POSITION);
    b.pos = pos;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 0) == 2);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == -1);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 5) == -1 && strstr(bitnet_last_error(), "5") != NULL);

    /* 32 positions for 2 sequences: 2 + 1 pages of 16. Sequence 1 takes one page, rewinds,
     * then grows into a second; sequence 0 cannot grow past its one page then. */
    bitnet_seq_id ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    struct bitnet_seq_batch b1 = {8, toks, pos, ones, NULL};
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b1), BITNET_OK);
    b1.pos = pos + 1; /* positions 1..8: a rewind to 1 first */
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b1), BITNET_OK);
    bitnet_pos far[8] = {9, 10, 11, 12, 13, 14, 15, 16};
    b1.pos = far;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b1), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == 16);
    bitnet_seq_id zeros8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    struct bitnet_seq_batch b0 = {8, toks, pos + 2, zeros8, NULL};
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b0), BITNET_OK); /* 2..9: still one page */
    bitnet_pos next[8] = {10, 11, 12, 13, 14, 15, 16, 17};
    b0.pos = next;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &b0), BITNET_ERR_CONTEXT_FULL);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 0) == 9);
    const float *logits = NULL;
    EXPECT_STATUS(bitnet_get_logits(ctx, &logits), BITNET_ERR_NO_LOGITS);

    /* Per-sequence KV calls. */
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(ctx, 1, 2, 4), BITNET_ERR_POSITION); /* a hole */
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == 16);
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(ctx, 1, 4, -1), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == 3);
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(ctx, 1, 20, 30), BITNET_OK); /* past the end */
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(ctx, 3, 0, -1), BITNET_ERR_SEQ_ID);
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(NULL, 0, 0, -1), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_kv_cache_seq_cp(ctx, 0, 1, 1, -1), BITNET_ERR_POSITION);
    EXPECT_STATUS(bitnet_kv_cache_seq_cp(ctx, 0, 7, 0, -1), BITNET_ERR_SEQ_ID);
    EXPECT_STATUS(bitnet_kv_cache_seq_cp(ctx, 0, 1, 0, 2), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == 1);
    EXPECT_STATUS(bitnet_kv_cache_seq_keep(ctx, 1), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 0) == -1 && bitnet_kv_cache_seq_pos_max(ctx, 1) == 1);
    EXPECT_STATUS(bitnet_kv_cache_seq_keep(ctx, -1), BITNET_ERR_SEQ_ID);
    EXPECT_STATUS(bitnet_kv_cache_seq_rm(ctx, -1, -1, -1), BITNET_OK);
    EXPECT(bitnet_kv_cache_seq_pos_max(ctx, 1) == -1);

    /* Batches allocated by the library. */
    struct bitnet_seq_batch owned;
    EXPECT_STATUS(bitnet_seq_batch_init(-1, &owned), BITNET_ERR_INVALID_ARG);
    EXPECT_STATUS(bitnet_seq_batch_init(2, NULL), BITNET_ERR_NULL_ARG);
    EXPECT_STATUS(bitnet_seq_batch_init(2, &owned), BITNET_OK);
    EXPECT(owned.n_tokens == 0 && owned.seq_id != NULL && owned.seq_id[1] == 0);
    owned.token[0] = 5;
    owned.token[1] = 6;
    owned.pos[0] = 0;
    owned.pos[1] = 0;
    owned.seq_id[1] = 1;
    owned.n_tokens = 2;
    owned.logits[0] = 1;
    EXPECT_STATUS(bitnet_decode_seqs(ctx, &owned), BITNET_OK);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 0, &logits), BITNET_OK);
    EXPECT_STATUS(bitnet_get_logits_ith(ctx, 1, &logits), BITNET_ERR_NO_LOGITS);
    bitnet_seq_batch_free(&owned);
    EXPECT(owned.token == NULL && owned.seq_id == NULL);
    bitnet_seq_batch_free(&owned);
    bitnet_seq_batch_free(NULL);
    bitnet_free(ctx);
}

/* A context keeps working after its model handle is freed. */
static void context_outlives_model(const char *model_path) {
    struct bitnet_model *m = NULL;
    EXPECT_STATUS(bitnet_model_load(model_path, NULL, &m), BITNET_OK);
    struct bitnet_context *ctx = NULL;
    EXPECT_STATUS(bitnet_context_init(m, NULL, &ctx), BITNET_OK);
    bitnet_model_free(m);
    bitnet_token toks[2] = {1, 2};
    struct bitnet_batch b = bitnet_batch_get_one(toks, 2);
    EXPECT_STATUS(bitnet_decode(ctx, &b), BITNET_OK);
    bitnet_free(ctx);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL NOT_A_MODEL_FILE\n", argv[0]);
        return 2;
    }
    version_and_errors();
    loading(argv[2]);
    newer_host(argv[1]);
    null_getters();

    struct bitnet_model *m = NULL;
    EXPECT_STATUS(bitnet_model_load(argv[1], NULL, &m), BITNET_OK);
    if (m == NULL) {
        fprintf(stderr, "misuse: cannot load %s: %s\n", argv[1], bitnet_last_error());
        return 1;
    }
    vocabulary(m);
    contexts(m);
    sequences(m);
    bitnet_model_free(m);
    context_outlives_model(argv[1]);

    /* Freeing NULL is a no-op everywhere. */
    bitnet_model_free(NULL);
    bitnet_free(NULL);
    bitnet_sampler_free(NULL);

    if (n_failed > 0) {
        fprintf(stderr, "misuse: %d of %d checks failed\n", n_failed, n_checks);
        return 1;
    }
    printf("misuse: all %d checks passed\n", n_checks);
    return 0;
}
