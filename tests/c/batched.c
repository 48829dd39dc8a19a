/*
 * batched.c - several prompts decoded together in one context (API 2), each checked against its
 * run alone.
 *
 *   batched MODEL.gguf N_PREDICT PROMPT...
 *
 * Every prompt is read in one bitnet_seq_batch (prompt i is sequence i), then tokens are
 * generated greedily, one batch per step holding the last token of each sequence still running.
 * Sequence i stops after N_PREDICT - i tokens (so they finish at different steps) or at an
 * end-of-generation token. Each sequence's tokens must equal a run of its prompt alone in a
 * one-sequence context (API 1 calls). stdout: "ids[i]: <tokens>" per prompt, then
 * "batched: ok". Exits 1 on any failure or disagreement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet.h"

#define MAX_SEQS 8
#define MAX_TOKENS 512

#define CHECK(call)                                                                        \
    do {                                                                                   \
        bitnet_status st_ = (call);                                                        \
        if (st_ != BITNET_OK) {                                                            \
            fprintf(stderr, "batched: %s failed: %s: %s\n", #call, bitnet_status_str(st_), \
                    bitnet_last_error());                                                  \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int tokenize(const struct bitnet_model *m, const char *text, bitnet_token *out) {
    int32_t n = 0;
    CHECK(bitnet_tokenize(m, text, -1, out, MAX_TOKENS, true, true, &n));
    return n;
}

/* The prompt alone, API 1 style: one context, one sequence. */
static int solo(const struct bitnet_model *m, bitnet_token *prompt, int n_prompt, int n_predict,
                bitnet_token *out) {
    struct bitnet_context_params cp = bitnet_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict);
    struct bitnet_context *ctx = NULL;
    CHECK(bitnet_context_init(m, &cp, &ctx));
    struct bitnet_sampler *smpl = NULL;
    CHECK(bitnet_sampler_init_greedy(&smpl));
    struct bitnet_batch b = bitnet_batch_get_one(prompt, n_prompt);
    int n = 0;
    for (int i = 0; i < n_predict; i++) {
        CHECK(bitnet_decode(ctx, &b));
        bitnet_token t;
        CHECK(bitnet_sampler_sample(smpl, ctx, -1, &t));
        if (bitnet_token_is_eog(m, t)) {
            break;
        }
        out[n++] = t;
        b = bitnet_batch_get_one(&out[n - 1], 1);
    }
    bitnet_sampler_free(smpl);
    bitnet_free(ctx);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc - 3 > MAX_SEQS) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT PROMPT... (1 to %d prompts)\n", argv[0], MAX_SEQS);
        return 2;
    }
    const int n_predict = atoi(argv[2]);
    const int n_seqs = argc - 3;
    if (n_predict < n_seqs) {
        fprintf(stderr, "batched: N_PREDICT must be at least the number of prompts\n");
        return 2;
    }
    struct bitnet_model *m = NULL;
    CHECK(bitnet_model_load(argv[1], NULL, &m));

    static bitnet_token prompts[MAX_SEQS][MAX_TOKENS];
    int n_prompt[MAX_SEQS];
    int total = 0;
    for (int s = 0; s < n_seqs; s++) {
        n_prompt[s] = tokenize(m, argv[3 + s], prompts[s]);
        total += n_prompt[s] + n_predict;
    }

    struct bitnet_context_params cp = bitnet_context_default_params();
    cp.n_ctx = (uint32_t)total;
    cp.n_seq_max = (uint32_t)n_seqs;
    struct bitnet_context *ctx = NULL;
    CHECK(bitnet_context_init(m, &cp, &ctx));
    if (bitnet_n_seq_max(ctx) != (uint32_t)n_seqs || bitnet_n_batch(ctx) != (uint32_t)total) {
        fprintf(stderr, "batched: the context does not have the requested shape\n");
        return 1;
    }
    struct bitnet_sampler *smpl[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        CHECK(bitnet_sampler_init_greedy(&smpl[s]));
    }

    struct bitnet_seq_batch batch;
    CHECK(bitnet_seq_batch_init(total, &batch));
    /* All prompts in one batch, logits for each prompt's last token. */
    int row_of[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        for (int j = 0; j < n_prompt[s]; j++) {
            int k = batch.n_tokens++;
            batch.token[k] = prompts[s][j];
            batch.pos[k] = j;
            batch.seq_id[k] = s;
            batch.logits[k] = j == n_prompt[s] - 1;
        }
        row_of[s] = batch.n_tokens - 1;
    }

    static bitnet_token out[MAX_SEQS][MAX_TOKENS];
    int n_out[MAX_SEQS] = {0};
    int running[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        running[s] = 1;
    }
    for (int step = 0; step < n_predict; step++) {
        CHECK(bitnet_decode_seqs(ctx, &batch));
        int n_next = 0;
        bitnet_token next[MAX_SEQS];
        int next_seq[MAX_SEQS];
        for (int s = 0; s < n_seqs; s++) {
            if (!running[s]) {
                continue;
            }
            bitnet_token t;
            CHECK(bitnet_sampler_sample(smpl[s], ctx, row_of[s], &t));
            if (bitnet_token_is_eog(m, t)) {
                running[s] = 0;
                continue;
            }
            out[s][n_out[s]++] = t;
            if (n_out[s] >= n_predict - s) {
                running[s] = 0;
                continue;
            }
            next[n_next] = t;
            next_seq[n_next++] = s;
        }
        if (n_next == 0) {
            break;
        }
        batch.n_tokens = 0;
        for (int k = 0; k < n_next; k++) {
            int s = next_seq[k];
            batch.token[k] = next[k];
            batch.pos[k] = n_prompt[s] + n_out[s] - 1;
            batch.seq_id[k] = s;
            batch.logits[k] = 1;
            row_of[s] = k;
        }
        batch.n_tokens = n_next;
        if (bitnet_kv_cache_seq_pos_max(ctx, next_seq[0]) != batch.pos[0] - 1) {
            fprintf(stderr, "batched: sequence %d holds the wrong positions\n", next_seq[0]);
            return 1;
        }
    }

    int failed = 0;
    for (int s = 0; s < n_seqs; s++) {
        static bitnet_token alone[MAX_TOKENS];
        int n_alone = solo(m, prompts[s], n_prompt[s], n_predict - s, alone);
        if (n_alone != n_out[s] || memcmp(alone, out[s], sizeof(bitnet_token) * (size_t)n_alone) != 0) {
            fprintf(stderr, "batched: sequence %d differs from its solo run\n", s);
            failed = 1;
        }
        printf("ids[%d]:", s);
        for (int i = 0; i < n_out[s]; i++) {
            printf(" %d", out[s][i]);
        }
        printf("\n");
    }

    bitnet_seq_batch_free(&batch);
    for (int s = 0; s < n_seqs; s++) {
        bitnet_sampler_free(smpl[s]);
    }
    bitnet_free(ctx);
    bitnet_model_free(m);
    if (failed) {
        return 1;
    }
    printf("batched: ok\n");
    return 0;
}
