/*
 * simple.c - generate text from a prompt, in the style of llama.cpp's examples/simple.
 *
 *   simple MODEL.gguf PROMPT N_PREDICT [TEMPERATURE TOP_K TOP_P REPEAT_PENALTY SEED]
 *
 * Without sampling arguments it decodes greedily. stdout gets two lines:
 *   ids: <generated token ids>
 *   text: <their text>
 * and the pieces are streamed to stderr as they are generated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet.h"

#define CHECK(call)                                                                       \
    do {                                                                                  \
        bitnet_status st_ = (call);                                                       \
        if (st_ != BITNET_OK) {                                                           \
            fprintf(stderr, "simple: %s failed: %s: %s\n", #call, bitnet_status_str(st_), \
                    bitnet_last_error());                                                 \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 4 && argc != 9) {
        fprintf(stderr, "usage: %s MODEL PROMPT N_PREDICT [TEMP TOP_K TOP_P REPEAT_PENALTY SEED]\n",
                argv[0]);
        return 2;
    }
    const char *model_path = argv[1];
    const char *prompt = argv[2];
    const int n_predict = atoi(argv[3]);

    fprintf(stderr, "bitnet %s (API %u): %s\n", bitnet_version(), bitnet_api_version(),
            bitnet_system_info());

    struct bitnet_model_params mparams = bitnet_model_default_params();
    struct bitnet_model *model = NULL;
    CHECK(bitnet_model_load(model_path, &mparams, &model));
    fprintf(stderr, "model: %s, n_vocab %d\n", bitnet_model_desc(model), bitnet_model_n_vocab(model));

    /* Ask for the token count first, then tokenize into a buffer of that size. */
    int32_t n_prompt = 0;
    bitnet_status st = bitnet_tokenize(model, prompt, -1, NULL, 0, true, true, &n_prompt);
    if (st != BITNET_ERR_BUFFER_TOO_SMALL && st != BITNET_OK) {
        CHECK(st);
    }
    bitnet_token *tokens = malloc(sizeof(bitnet_token) * (size_t)(n_prompt + n_predict + 1));
    if (tokens == NULL) {
        return 1;
    }
    CHECK(bitnet_tokenize(model, prompt, -1, tokens, n_prompt, true, true, &n_prompt));

    struct bitnet_context_params cparams = bitnet_context_default_params();
    cparams.n_ctx = (uint32_t)(n_prompt + n_predict);
    struct bitnet_context *ctx = NULL;
    CHECK(bitnet_context_init(model, &cparams, &ctx));

    struct bitnet_sampler *smpl = NULL;
    if (argc == 9) {
        struct bitnet_sampler_params sparams = bitnet_sampler_default_params();
        sparams.temperature = (float)atof(argv[4]);
        sparams.top_k = atoi(argv[5]);
        sparams.top_p = (float)atof(argv[6]);
        sparams.repeat_penalty = (float)atof(argv[7]);
        sparams.seed = (uint32_t)strtoul(argv[8], NULL, 10);
        CHECK(bitnet_sampler_init(&sparams, &smpl));
    } else {
        CHECK(bitnet_sampler_init_greedy(&smpl));
    }

    /* Evaluate the prompt, then feed back one sampled token at a time. */
    struct bitnet_batch batch = bitnet_batch_get_one(tokens, n_prompt);
    bitnet_token *generated = tokens + n_prompt;
    int n_generated = 0;
    char piece[256];
    for (int i = 0; i < n_predict; i++) {
        CHECK(bitnet_decode(ctx, &batch));
        bitnet_token next;
        CHECK(bitnet_sampler_sample(smpl, ctx, -1, &next));
        if (bitnet_token_is_eog(model, next)) {
            break;
        }
        int32_t n = 0;
        CHECK(bitnet_token_to_piece(model, next, piece, (int32_t)sizeof piece, false, &n));
        fwrite(piece, 1, (size_t)n, stderr);
        generated[n_generated++] = next;
        batch = bitnet_batch_get_one(&generated[n_generated - 1], 1);
    }
    fputc('\n', stderr);

    printf("ids:");
    for (int i = 0; i < n_generated; i++) {
        printf(" %d", generated[i]);
    }
    printf("\n");

    int32_t n_text = 0;
    st = bitnet_detokenize(model, generated, n_generated, NULL, 0, false, false, &n_text);
    if (st != BITNET_ERR_BUFFER_TOO_SMALL && st != BITNET_OK) {
        CHECK(st);
    }
    char *text = malloc((size_t)n_text + 1);
    if (text == NULL) {
        return 1;
    }
    CHECK(bitnet_detokenize(model, generated, n_generated, text, n_text + 1, false, false, &n_text));
    printf("text: %s\n", text);

    free(text);
    free(tokens);
    bitnet_sampler_free(smpl);
    bitnet_free(ctx);
    bitnet_model_free(model);
    return 0;
}
