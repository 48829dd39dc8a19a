/*
 * bitnet.h - C API of bitnet-rs: run BitNet b1.58 (ternary) models from C and C++.
 *
 * The API follows llama.h: load a model, create a context (one or more sequences sharing one KV
 * cache), tokenize, decode batches, read logits, sample. Names carry a `bitnet_` prefix.
 *
 * API VERSIONS
 *   2 adds several sequences per context: bitnet_context_params.n_seq_max and .n_batch,
 *   struct bitnet_seq_batch with a sequence id per token, bitnet_decode_seqs(), per-sequence
 *   KV-cache calls (bitnet_kv_cache_seq_*) and BITNET_ERR_SEQ_ID. A host built against API 1
 *   runs unchanged: its contexts have one sequence (id 0), which every API 1 call addresses.
 *   2 also adds bitnet_model_params.device: a model on a GPU (BITNET_DEVICE_CUDA(n), for a
 *   library built with the cuda feature); its contexts hold one sequence (n_seq_max 1).
 *   2 also adds bitnet_model_params.head_type: the LM head as in the file or quantized once at
 *   load (enum bitnet_head_type).
 *
 * Library: libbitnet.so / libbitnet.a, built by `cargo build --release -p bitnet-ffi`.
 *
 * ERRORS
 *   Every call that can fail returns a bitnet_status: BITNET_OK (0) or a negative
 *   BITNET_ERR_* code; results come back through out-parameters, which are written only on
 *   success unless stated otherwise (a handle out-parameter such as *model is set to NULL when
 *   the call fails). bitnet_last_error() gives a message for the most recent
 *   failure on the calling thread. NULL handles or pointers, invalid UTF-8, out-of-range tokens
 *   or positions and context overflow are reported as codes, never as crashes; an internal
 *   error (a caught Rust panic) is BITNET_ERR_INTERNAL. Getters that cannot fail on a valid
 *   handle return a value directly; given a NULL handle they return the documented sentinel
 *   (-1, 0, NULL, false or BITNET_TOKEN_NULL) and set bitnet_last_error().
 *
 * OWNERSHIP
 *   Objects returned through `**out` parameters are owned by the caller and released with the
 *   matching *_free function. Every *_free function accepts NULL (no-op); freeing an object
 *   twice, or using it after it was freed, is undefined behaviour.
 *   A context keeps its model's weights alive: bitnet_model_free() may be called while contexts
 *   created from the model still exist (they stay usable), but the model pointer itself must
 *   not be used afterwards. Strings returned as `const char *` by model getters belong to the
 *   model and stay valid until bitnet_model_free(). Logits pointers belong to the context and
 *   stay valid until its next bitnet_decode(), KV-cache call or bitnet_free().
 *
 * THREADS
 *   A model is immutable once loaded: any number of threads may use one model at the same time
 *   (tokenize, detokenize, getters, creating contexts). A context or a sampler must be used by
 *   one thread at a time (it may move between threads); a second thread entering a context or
 *   sampler that is in use gets BITNET_ERR_BUSY instead of a data race. Use one context per
 *   thread; to advance many sequences at once, give one context n_seq_max sequences and decode
 *   them together in one bitnet_seq_batch (one pass over the weights). The matrix kernels run on one process-wide worker pool whose size is
 *   set by the n_threads parameters below (last setting wins) or BITNET_NUM_THREADS.
 *   bitnet_last_error() is per thread.
 *
 * STRUCT VERSIONING
 *   Parameter structs start with `struct_size`. Fill them with the *_default_params() helpers
 *   (or *_params_init(p, sizeof *p)) and then change fields. The library accepts structs from
 *   older headers (missing fields take their defaults) and from newer headers as long as the
 *   fields it does not know are zero.
 *
 * TEXT OUTPUT
 *   Functions that write text take (buf, buf_size, n_written): on success the text and a
 *   terminating NUL are written and *n_written (if not NULL) receives the text length in bytes,
 *   without the NUL. When buf_size < length + 1 nothing is written, the call returns
 *   BITNET_ERR_BUFFER_TOO_SMALL and *n_written receives the length, so a second call with a
 *   buffer of length + 1 bytes succeeds. buf may be NULL when buf_size is 0.
 */
#ifndef BITNET_H
#define BITNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this header's API; bitnet_api_version() returns the library's. */
#define BITNET_API_VERSION 2

/* "No such token" (e.g. a model without an end-of-turn token). */
#define BITNET_TOKEN_NULL (-1)

/* Sampler seed meaning "use the seed of the context it samples from". */
#define BITNET_DEFAULT_SEED 0xFFFFFFFFu

typedef int32_t bitnet_token;
typedef int32_t bitnet_pos;
typedef int32_t bitnet_seq_id; /* a sequence of a context: 0 .. n_seq_max - 1 (API 2) */
typedef int32_t bitnet_status;

/* Values of bitnet_status. */
enum bitnet_status_code {
    BITNET_OK = 0,
    BITNET_ERR_NULL_ARG = -1,         /* a required pointer or handle is NULL */
    BITNET_ERR_INVALID_ARG = -2,      /* a value outside its documented range */
    BITNET_ERR_INVALID_UTF8 = -3,     /* text is not valid UTF-8 */
    BITNET_ERR_TOKEN = -4,            /* token id < 0 or >= n_vocab */
    BITNET_ERR_POSITION = -5,         /* positions not consecutive, negative or past the sequence */
    BITNET_ERR_CONTEXT_FULL = -6,     /* the batch does not fit in the context's KV cache (n_ctx) */
    BITNET_ERR_BUFFER_TOO_SMALL = -7, /* output buffer too small; the needed size was returned */
    BITNET_ERR_IO = -8,               /* a file could not be opened or read */
    BITNET_ERR_MODEL = -9,            /* not a usable model: format, architecture, metadata */
    BITNET_ERR_NO_LOGITS = -10,       /* no logits for that batch index */
    BITNET_ERR_BUSY = -11,            /* context or sampler in use by another thread */
    BITNET_ERR_INTERNAL = -12,        /* internal error (including a caught Rust panic) */
    BITNET_ERR_SEQ_ID = -13           /* sequence id < 0 or >= n_seq_max (API 2) */
};

/* Element type of a context's KV cache. */
enum bitnet_kv_type {
    BITNET_KV_F32 = 0, /* exact (default) */
    BITNET_KV_F16 = 1  /* half the memory; logits move slightly */
};

/* Storage of the LM head (bitnet_model_params.head_type): as in the file, or quantized once at
 * load with ggml's reference quantizers from the file's F16/BF16/F32 rows. Fewer bytes per
 * generated token (decoding is bound by memory bandwidth), slightly different logits. */
enum bitnet_head_type {
    BITNET_HEAD_FILE = 0, /* as the file stores it (default) */
    BITNET_HEAD_Q8_0 = 1, /* ggml Q8_0, 8.5 bits per weight */
    BITNET_HEAD_Q6_K = 2, /* ggml Q6_K, 6.56 bits per weight */
    BITNET_HEAD_Q4_0 = 3  /* ggml Q4_0, 4.5 bits per weight */
};

struct bitnet_model;   /* loaded weights, tokenizer and metadata; shareable between threads */
struct bitnet_context; /* sequences sharing one KV cache, their tokens, the last logits */
struct bitnet_sampler; /* sampling settings and RNG state */

/* ---- Version, capabilities, errors --------------------------------------------------------- */

/* Library version, e.g. "0.1.0". Static string. */
const char *bitnet_version(void);

/* BITNET_API_VERSION the library was built with. */
uint32_t bitnet_api_version(void);

/* One line describing the selected matrix kernel (BITNET_KERNEL overrides the automatic choice),
 * the kernels this CPU can run and the worker thread count, e.g.
 * "kernel = avx512vnni | available = scalar avx2 avxvnni avx512vnni | threads = 8".
 * Valid until the next bitnet_system_info() call on the same thread. */
const char *bitnet_system_info(void);

/* Symbolic name of a status code, e.g. "BITNET_ERR_TOKEN". Static string. */
const char *bitnet_status_str(bitnet_status status);

/* Message of the most recent failed call on this thread ("" if none). Valid until the next
 * failing call on this thread. */
const char *bitnet_last_error(void);

/* ---- Model --------------------------------------------------------------------------------- */

struct bitnet_model_params {
    size_t struct_size;         /* sizeof(struct bitnet_model_params) */
    int32_t n_threads;          /* kernel threads (process-wide); 0 = keep the current setting */
    uint32_t n_ctx_max;         /* largest n_ctx of any context; 0 = the training context */
    const char *tokenizer_json; /* NULL = GGUF vocabulary; else a tokenizer.json with the same ids */
    /* API 2 (an API 1 host's shorter struct gets the CPU): */
    uint32_t device; /* BITNET_DEVICE_CPU (default) or BITNET_DEVICE_CUDA(n): GPU n, for a library
                      * built with the cuda feature (else BITNET_ERR_INVALID_ARG). Contexts of a
                      * model on a GPU hold one sequence: n_seq_max > 1 is BITNET_ERR_INVALID_ARG */
    /* API 2 (a shorter struct gets BITNET_HEAD_FILE): */
    int32_t head_type; /* enum bitnet_head_type; the quantized heads run on the CPU only: with a
                        * GPU device, anything but BITNET_HEAD_FILE is BITNET_ERR_INVALID_ARG */
};

#define BITNET_DEVICE_CPU 0u
#define BITNET_DEVICE_CUDA(n) (1u + (uint32_t)(n))

/* Fills *params with defaults; struct_size is the caller's sizeof(*params). */
bitnet_status bitnet_model_params_init(struct bitnet_model_params *params, size_t struct_size);

static inline struct bitnet_model_params bitnet_model_default_params(void) {
    struct bitnet_model_params p;
    (void)bitnet_model_params_init(&p, sizeof p);
    return p;
}

/* Loads a GGUF model file (bitnet-b1.58 / bitnet-25, bitnet, ternary llama; I2_S, TQ2_0, TQ1_0,
 * F16, F32). params may be NULL (defaults). On success *model receives a new model. */
bitnet_status bitnet_model_load(const char *path, const struct bitnet_model_params *params,
                                struct bitnet_model **model);

void bitnet_model_free(struct bitnet_model *model);

/* general.architecture, e.g. "bitnet-b1.58". */
const char *bitnet_model_architecture(const struct bitnet_model *model);
/* One line in llama.cpp's style: architecture, parameter count, weight type. */
const char *bitnet_model_desc(const struct bitnet_model *model);
/* general.name, or NULL when the file has none. */
const char *bitnet_model_name(const struct bitnet_model *model);
/* tokenizer.chat_template, or NULL when the file has none (bitnet_chat_apply_template then
 * uses BitNet b1.58's built-in format). */
const char *bitnet_model_chat_template(const struct bitnet_model *model);

int32_t bitnet_model_n_vocab(const struct bitnet_model *model);     /* -1 on NULL */
int32_t bitnet_model_n_ctx_train(const struct bitnet_model *model); /* -1 on NULL */
int32_t bitnet_model_n_embd(const struct bitnet_model *model);      /* -1 on NULL */
int32_t bitnet_model_n_layer(const struct bitnet_model *model);     /* -1 on NULL */
int32_t bitnet_model_n_head(const struct bitnet_model *model);      /* -1 on NULL */
int32_t bitnet_model_n_head_kv(const struct bitnet_model *model);   /* -1 on NULL */
uint64_t bitnet_model_n_params(const struct bitnet_model *model);   /* 0 on NULL */
uint64_t bitnet_model_size(const struct bitnet_model *model);       /* file bytes; 0 on NULL */

/* ---- Vocabulary and tokenization ------------------------------------------------------------ */

bitnet_token bitnet_token_bos(const struct bitnet_model *model); /* BITNET_TOKEN_NULL if none */
bitnet_token bitnet_token_eos(const struct bitnet_model *model); /* BITNET_TOKEN_NULL if none */
bitnet_token bitnet_token_eot(const struct bitnet_model *model); /* BITNET_TOKEN_NULL if none */
/* Whether generation must stop at this token (EOS, EOT, EOM and the like). */
bool bitnet_token_is_eog(const struct bitnet_model *model, bitnet_token token);
/* Whether bitnet_tokenize(add_special = true) prepends BOS for this vocabulary. */
bool bitnet_model_add_bos(const struct bitnet_model *model);

/* Text (text_len bytes of UTF-8, or NUL-terminated when text_len < 0) to token ids.
 * add_special: prepend BOS when the vocabulary asks for it.
 * parse_special: special-token texts such as "<|eot_id|>" become their ids (else plain text).
 * *n_tokens receives the token count; if it exceeds n_tokens_max nothing is written and the
 * call returns BITNET_ERR_BUFFER_TOO_SMALL (tokens may be NULL when n_tokens_max is 0). */
bitnet_status bitnet_tokenize(const struct bitnet_model *model, const char *text, int32_t text_len,
                              bitnet_token *tokens, int32_t n_tokens_max, bool add_special,
                              bool parse_special, int32_t *n_tokens);

/* The bytes one token stands for (see TEXT OUTPUT). A piece may be part of a multi-byte UTF-8
 * character; concatenating the pieces of a sequence gives its text. special: render control
 * tokens such as "<|eot_id|>" (else they are empty). */
bitnet_status bitnet_token_to_piece(const struct bitnet_model *model, bitnet_token token, char *buf,
                                    int32_t buf_size, bool special, int32_t *n_written);

/* Token ids to UTF-8 text (see TEXT OUTPUT; bytes that do not form valid UTF-8 become U+FFFD).
 * remove_special: drop a leading BOS. unparse_special: render control tokens as text. */
bitnet_status bitnet_detokenize(const struct bitnet_model *model, const bitnet_token *tokens,
                                int32_t n_tokens, char *buf, int32_t buf_size, bool remove_special,
                                bool unparse_special, int32_t *n_written);

/* ---- Chat templates ------------------------------------------------------------------------- */

struct bitnet_chat_message {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8 */
};

/* Formats a conversation with the model's chat template (see TEXT OUTPUT). add_assistant: end
 * with the start of the assistant's turn. */
bitnet_status bitnet_chat_apply_template(const struct bitnet_model *model,
                                         const struct bitnet_chat_message *messages,
                                         size_t n_messages, bool add_assistant, char *buf,
                                         int32_t buf_size, int32_t *n_written);

/* ---- Context -------------------------------------------------------------------------------- */

struct bitnet_context_params {
    size_t struct_size; /* sizeof(struct bitnet_context_params) */
    uint32_t n_ctx;     /* KV cache positions, shared by all sequences; 0 = the model's n_ctx_max */
    int32_t n_threads;  /* kernel threads (process-wide); 0 = keep the current setting */
    uint32_t seed;      /* seed of samplers created with BITNET_DEFAULT_SEED */
    int32_t type_kv;    /* enum bitnet_kv_type */
    /* API 2 (an API 1 host's shorter struct gets these defaults): */
    uint32_t n_seq_max; /* sequences (ids 0 .. n_seq_max - 1); default 1 */
    uint32_t n_batch;   /* most tokens one decode call takes (more: BITNET_ERR_INVALID_ARG); 0 (default):
                           no limit but n_ctx (more: BITNET_ERR_CONTEXT_FULL, as in API 1) */
};

bitnet_status bitnet_context_params_init(struct bitnet_context_params *params, size_t struct_size);

static inline struct bitnet_context_params bitnet_context_default_params(void) {
    struct bitnet_context_params p;
    (void)bitnet_context_params_init(&p, sizeof p);
    return p;
}

/* Creates a context on a model. params may be NULL (defaults). BITNET_ERR_INVALID_ARG when
 * n_seq_max is 0, or is 1 and n_ctx exceeds the model's n_ctx_max (raise
 * bitnet_model_params.n_ctx_max).
 *
 * The KV cache holds n_ctx positions in all, shared by the sequences and granted in pages of 16
 * positions as they grow (a sequence of L positions holds ceil(L / 16) pages); it has
 * ceil(n_ctx / 16) + n_seq_max - 1 pages, so sequences of n_ctx positions in all always fit.
 * One sequence may grow to n_ctx positions (with n_seq_max > 1, at most the model's n_ctx_max;
 * then n_ctx may exceed n_ctx_max). A sequence's positions are always 0 .. its length - 1. */
bitnet_status bitnet_context_init(const struct bitnet_model *model,
                                  const struct bitnet_context_params *params,
                                  struct bitnet_context **ctx);

void bitnet_free(struct bitnet_context *ctx);

uint32_t bitnet_n_ctx(const struct bitnet_context *ctx);     /* 0 on NULL */
uint32_t bitnet_n_seq_max(const struct bitnet_context *ctx); /* 0 on NULL (API 2) */
uint32_t bitnet_n_batch(const struct bitnet_context *ctx);   /* n_ctx if unset; 0 on NULL (API 2) */

/* ---- KV cache -------------------------------------------------------------------------------
 * Any call that changes a sequence forgets the last batch's logits. */

/* Number of positions of sequence 0 (its next position to decode); -1 on NULL or BUSY. */
int32_t bitnet_kv_cache_n_tokens(const struct bitnet_context *ctx);

/* Forgets every sequence. */
bitnet_status bitnet_kv_cache_clear(struct bitnet_context *ctx);

/* Keeps positions [0, n_keep) of sequence 0 and forgets the rest (n_keep >= its length: no
 * change). */
bitnet_status bitnet_kv_cache_truncate(struct bitnet_context *ctx, bitnet_pos n_keep);

/* API 2, per sequence (as llama.h's llama_memory_seq_*). */

/* Largest position of sequence seq_id; -1 when it is empty, and on error (then
 * bitnet_last_error() says why, e.g. an unknown sequence). */
bitnet_pos bitnet_kv_cache_seq_pos_max(const struct bitnet_context *ctx, bitnet_seq_id seq_id);

/* Removes positions [p0, p1) of sequence seq_id (seq_id < 0: of every sequence; p0 < 0: from 0;
 * p1 < 0: to the end). Positions stay contiguous, so the range must reach the sequence's end:
 * otherwise BITNET_ERR_POSITION and nothing changes. A range past the end changes nothing. */
bitnet_status bitnet_kv_cache_seq_rm(struct bitnet_context *ctx, bitnet_seq_id seq_id,
                                     bitnet_pos p0, bitnet_pos p1);

/* Makes sequence dst hold positions [0, p1) of sequence src (p1 < 0 or past its end: all of
 * them); what dst held is forgotten. p0 must be <= 0 (a prefix). The cache pages are shared,
 * not copied, until one of the two sequences writes into a shared page: a common prompt is
 * stored once. src == dst changes nothing. */
bitnet_status bitnet_kv_cache_seq_cp(struct bitnet_context *ctx, bitnet_seq_id src,
                                     bitnet_seq_id dst, bitnet_pos p0, bitnet_pos p1);

/* Forgets every sequence but seq_id. */
bitnet_status bitnet_kv_cache_seq_keep(struct bitnet_context *ctx, bitnet_seq_id seq_id);

/* ---- Decoding ------------------------------------------------------------------------------- */

/* A batch of tokens of sequence 0 (API 1). The arrays belong to the caller (or to
 * bitnet_batch_init). Positions must be consecutive and the first one at most the number of
 * cached positions: decoding at p < bitnet_kv_cache_n_tokens() first forgets positions >= p. */
struct bitnet_batch {
    int32_t n_tokens;
    bitnet_token *token; /* [n_tokens] */
    bitnet_pos *pos;     /* [n_tokens], or NULL: the positions after the cached ones */
    int8_t *logits;      /* [n_tokens] nonzero = keep this token's logits, or NULL: last token only */
};

/* A batch view of n_tokens tokens at the next positions, logits for the last one. */
static inline struct bitnet_batch bitnet_batch_get_one(bitnet_token *tokens, int32_t n_tokens) {
    struct bitnet_batch b;
    b.n_tokens = n_tokens;
    b.token = tokens;
    b.pos = NULL;
    b.logits = NULL;
    return b;
}

/* Allocates token, pos and logits arrays for up to n_tokens_max tokens (zeroed; n_tokens = 0).
 * Release with bitnet_batch_free(). */
bitnet_status bitnet_batch_init(int32_t n_tokens_max, struct bitnet_batch *batch);

/* Frees arrays from bitnet_batch_init() and sets them to NULL. NULL batch: no-op. */
void bitnet_batch_free(struct bitnet_batch *batch);

/* Runs the model on a batch of sequence 0. On failure the sequence keeps at most the positions
 * before the batch and no logits are available. */
bitnet_status bitnet_decode(struct bitnet_context *ctx, const struct bitnet_batch *batch);

/* A batch of tokens of any sequences of a context (API 2), as llama.h's llama_batch with one
 * sequence per token. Tokens of different sequences may come in any order; the tokens of one
 * sequence, in batch order, must have consecutive positions starting at most at that sequence's
 * length (starting earlier first forgets its positions from there on). Every projection runs
 * once over all tokens; each sequence attends only to its own positions, and its logits equal
 * those of decoding it alone. */
struct bitnet_seq_batch {
    int32_t n_tokens;
    bitnet_token *token;    /* [n_tokens] */
    bitnet_pos *pos;        /* [n_tokens] */
    bitnet_seq_id *seq_id;  /* [n_tokens] */
    int8_t *logits;         /* [n_tokens] nonzero = keep this token's logits, or NULL: last token only */
};

/* Allocates token, pos, seq_id and logits arrays for up to n_tokens_max tokens (zeroed;
 * n_tokens = 0). Release with bitnet_seq_batch_free(). */
bitnet_status bitnet_seq_batch_init(int32_t n_tokens_max, struct bitnet_seq_batch *batch);

/* Frees arrays from bitnet_seq_batch_init() and sets them to NULL. NULL batch: no-op. */
void bitnet_seq_batch_free(struct bitnet_seq_batch *batch);

/* Runs the model on a batch of any sequences. Errors: n_tokens <= 0 or > n_batch
 * (BITNET_ERR_INVALID_ARG), a bad token (BITNET_ERR_TOKEN), a sequence id outside the context
 * (BITNET_ERR_SEQ_ID), a position gap (BITNET_ERR_POSITION), a sequence past n_ctx or no free
 * pages left for the batch (BITNET_ERR_CONTEXT_FULL). On failure each sequence of the batch keeps
 * at most the positions before its first token in it, and no logits are available. */
bitnet_status bitnet_decode_seqs(struct bitnet_context *ctx, const struct bitnet_seq_batch *batch);

/* Logits [n_vocab] of the last token of the last batch (which must have requested them). */
bitnet_status bitnet_get_logits(struct bitnet_context *ctx, const float **logits);

/* Logits [n_vocab] of token i of the last batch; i < 0 counts from the end (-1 = last). */
bitnet_status bitnet_get_logits_ith(struct bitnet_context *ctx, int32_t i, const float **logits);

/* ---- Sampling ------------------------------------------------------------------------------- */

/* Order of operations as in llama.cpp: repeat penalty, top-k, temperature, top-p, seeded draw. */
struct bitnet_sampler_params {
    size_t struct_size;   /* sizeof(struct bitnet_sampler_params) */
    float temperature;    /* <= 0: greedy (argmax, lowest id on ties). Default 0 */
    int32_t top_k;        /* keep the k most likely tokens; <= 0 disables. Default 0 */
    float top_p;          /* nucleus mass in (0, 1]; 1 disables. Default 1 */
    float repeat_penalty; /* > 0; 1 disables. Default 1 */
    int32_t repeat_last_n; /* tokens of the sequence the penalty looks at, >= 0. Default 64 */
    uint32_t seed;        /* RNG seed; BITNET_DEFAULT_SEED = the context's seed. Default that */
};

bitnet_status bitnet_sampler_params_init(struct bitnet_sampler_params *params, size_t struct_size);

static inline struct bitnet_sampler_params bitnet_sampler_default_params(void) {
    struct bitnet_sampler_params p;
    (void)bitnet_sampler_params_init(&p, sizeof p);
    return p;
}

bitnet_status bitnet_sampler_init(const struct bitnet_sampler_params *params,
                                  struct bitnet_sampler **smpl);

/* A greedy sampler (default parameters). */
bitnet_status bitnet_sampler_init_greedy(struct bitnet_sampler **smpl);

void bitnet_sampler_free(struct bitnet_sampler *smpl);

/* Restarts the RNG from the seed. */
bitnet_status bitnet_sampler_reset(struct bitnet_sampler *smpl);

/* Chooses a token from the logits of token i of the context's last batch (i < 0 counts from the
 * end). The repeat penalty looks at that token's sequence up to and including that token. Use
 * one sampler per sequence: each keeps its own RNG. */
bitnet_status bitnet_sampler_sample(struct bitnet_sampler *smpl, struct bitnet_context *ctx,
                                    int32_t i, bitnet_token *token);

#ifdef __cplusplus
}
#endif

#endif /* BITNET_H */
