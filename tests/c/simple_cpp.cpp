// simple_cpp.cpp - the greedy generation loop of simple.c in C++, on several threads at once.
//
//   simple_cpp MODEL.gguf PROMPT N_PREDICT N_THREADS
//
// One model is shared by N_THREADS threads, each with its own context and sampler (the
// documented threading model). Then one context with N_THREADS sequences (API 2) reads the
// prompt once into sequence 0, copies it to the others (bitnet_kv_cache_seq_cp) and generates
// for all of them in one bitnet_seq_batch per step. Every thread and every sequence must
// generate the same tokens; stdout then gets
//   ids: <generated token ids>
//   text: <their text>
// and the exit code is 0. Any failure or disagreement exits with 1.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bitnet.h"

namespace {

struct ModelDeleter {
    void operator()(bitnet_model *m) const { bitnet_model_free(m); }
};
struct ContextDeleter {
    void operator()(bitnet_context *c) const { bitnet_free(c); }
};
struct SamplerDeleter {
    void operator()(bitnet_sampler *s) const { bitnet_sampler_free(s); }
};
using Model = std::unique_ptr<bitnet_model, ModelDeleter>;
using Context = std::unique_ptr<bitnet_context, ContextDeleter>;
using Sampler = std::unique_ptr<bitnet_sampler, SamplerDeleter>;

void check(bitnet_status st, const char *what) {
    if (st != BITNET_OK) {
        throw std::runtime_error(std::string(what) + ": " + bitnet_status_str(st) + ": " +
                                 bitnet_last_error());
    }
}

struct SeqBatch {
    bitnet_seq_batch b{};
    explicit SeqBatch(int32_t n) { check(bitnet_seq_batch_init(n, &b), "bitnet_seq_batch_init"); }
    ~SeqBatch() { bitnet_seq_batch_free(&b); }
    SeqBatch(const SeqBatch &) = delete;
    SeqBatch &operator=(const SeqBatch &) = delete;
    void add(bitnet_token token, bitnet_pos pos, bitnet_seq_id seq, bool logits) {
        const int32_t k = b.n_tokens++;
        b.token[k] = token;
        b.pos[k] = pos;
        b.seq_id[k] = seq;
        b.logits[k] = logits ? 1 : 0;
    }
};

std::vector<bitnet_token> tokenize(const bitnet_model *model, const std::string &text) {
    int32_t n = 0;
    bitnet_status st = bitnet_tokenize(model, text.data(), static_cast<int32_t>(text.size()),
                                       nullptr, 0, true, true, &n);
    if (st != BITNET_ERR_BUFFER_TOO_SMALL) {
        check(st, "bitnet_tokenize (size)");
    }
    std::vector<bitnet_token> ids(static_cast<size_t>(n));
    check(bitnet_tokenize(model, text.data(), static_cast<int32_t>(text.size()), ids.data(), n,
                          true, true, &n),
          "bitnet_tokenize");
    return ids;
}

std::string detokenize(const bitnet_model *model, const std::vector<bitnet_token> &ids) {
    int32_t n = 0;
    bitnet_status st = bitnet_detokenize(model, ids.data(), static_cast<int32_t>(ids.size()),
                                         nullptr, 0, false, false, &n);
    if (st != BITNET_ERR_BUFFER_TOO_SMALL) {
        check(st, "bitnet_detokenize (size)");
    }
    std::string text(static_cast<size_t>(n) + 1, '\0');
    check(bitnet_detokenize(model, ids.data(), static_cast<int32_t>(ids.size()), &text[0], n + 1,
                            false, false, &n),
          "bitnet_detokenize");
    text.resize(static_cast<size_t>(n));
    return text;
}

std::vector<bitnet_token> generate(const bitnet_model *model, std::vector<bitnet_token> prompt,
                                   int n_predict) {
    bitnet_context_params cparams = bitnet_context_default_params();
    cparams.n_ctx = static_cast<uint32_t>(prompt.size()) + static_cast<uint32_t>(n_predict);
    bitnet_context *raw_ctx = nullptr;
    check(bitnet_context_init(model, &cparams, &raw_ctx), "bitnet_context_init");
    Context ctx(raw_ctx);
    bitnet_sampler *raw_smpl = nullptr;
    check(bitnet_sampler_init_greedy(&raw_smpl), "bitnet_sampler_init_greedy");
    Sampler smpl(raw_smpl);

    std::vector<bitnet_token> out;
    bitnet_batch batch = bitnet_batch_get_one(prompt.data(), static_cast<int32_t>(prompt.size()));
    bitnet_token next = 0;
    for (int i = 0; i < n_predict; i++) {
        check(bitnet_decode(ctx.get(), &batch), "bitnet_decode");
        check(bitnet_sampler_sample(smpl.get(), ctx.get(), -1, &next), "bitnet_sampler_sample");
        if (bitnet_token_is_eog(model, next)) {
            break;
        }
        out.push_back(next);
        batch = bitnet_batch_get_one(&next, 1);
    }
    return out;
}

// The prompt read once into sequence 0 and copied to n_seqs - 1 more; all generate together.
std::vector<std::vector<bitnet_token>> generate_together(const bitnet_model *model,
                                                         const std::vector<bitnet_token> &prompt,
                                                         int n_predict, int n_seqs) {
    const int32_t n_prompt = static_cast<int32_t>(prompt.size());
    bitnet_context_params cparams = bitnet_context_default_params();
    cparams.n_ctx = static_cast<uint32_t>(n_seqs * (n_prompt + n_predict));
    cparams.n_seq_max = static_cast<uint32_t>(n_seqs);
    bitnet_context *raw_ctx = nullptr;
    check(bitnet_context_init(model, &cparams, &raw_ctx), "bitnet_context_init");
    Context ctx(raw_ctx);
    std::vector<Sampler> samplers;
    for (int s = 0; s < n_seqs; s++) {
        bitnet_sampler *raw = nullptr;
        check(bitnet_sampler_init_greedy(&raw), "bitnet_sampler_init_greedy");
        samplers.emplace_back(raw);
    }
    SeqBatch batch(n_prompt + n_seqs);
    for (int32_t j = 0; j < n_prompt; j++) {
        batch.add(prompt[static_cast<size_t>(j)], j, 0, j == n_prompt - 1);
    }
    check(bitnet_decode_seqs(ctx.get(), &batch.b), "bitnet_decode_seqs (prompt)");
    for (int s = 1; s < n_seqs; s++) {
        check(bitnet_kv_cache_seq_cp(ctx.get(), 0, s, -1, -1), "bitnet_kv_cache_seq_cp");
    }
    if (bitnet_kv_cache_seq_pos_max(ctx.get(), n_seqs - 1) != n_prompt - 1) {
        throw std::runtime_error("the copied sequence does not hold the prompt");
    }
    // The copies share the prompt's logits: its last token is re-decoded in each of them.
    std::vector<std::vector<bitnet_token>> out(static_cast<size_t>(n_seqs));
    std::vector<bool> running(static_cast<size_t>(n_seqs), true);
    batch.b.n_tokens = 0;
    for (int s = 0; s < n_seqs; s++) {
        batch.add(prompt.back(), n_prompt - 1, s, true);
    }
    for (int i = 0; i < n_predict; i++) {
        check(bitnet_decode_seqs(ctx.get(), &batch.b), "bitnet_decode_seqs");
        const int32_t n_rows = batch.b.n_tokens;
        std::vector<bitnet_seq_id> seqs(batch.b.seq_id, batch.b.seq_id + n_rows);
        batch.b.n_tokens = 0;
        for (int32_t k = 0; k < n_rows; k++) {
            const auto s = static_cast<size_t>(seqs[static_cast<size_t>(k)]);
            bitnet_token next = 0;
            check(bitnet_sampler_sample(samplers[s].get(), ctx.get(), k, &next),
                  "bitnet_sampler_sample");
            if (bitnet_token_is_eog(model, next)) {
                running[s] = false;
                continue;
            }
            out[s].push_back(next);
            const auto pos = static_cast<bitnet_pos>(static_cast<size_t>(n_prompt) + out[s].size() - 1);
            batch.add(next, pos, static_cast<bitnet_seq_id>(s), true);
        }
        if (batch.b.n_tokens == 0) {
            break;
        }
    }
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s MODEL PROMPT N_PREDICT N_THREADS\n", argv[0]);
        return 2;
    }
    const int n_predict = std::atoi(argv[3]);
    const int n_threads = std::atoi(argv[4]);
    try {
        bitnet_model *raw = nullptr;
        check(bitnet_model_load(argv[1], nullptr, &raw), "bitnet_model_load");
        Model model(raw);
        const std::vector<bitnet_token> prompt = tokenize(model.get(), argv[2]);

        std::vector<std::vector<bitnet_token>> results(static_cast<size_t>(n_threads));
        std::vector<std::string> errors(static_cast<size_t>(n_threads));
        std::vector<std::thread> threads;
        for (int t = 0; t < n_threads; t++) {
            threads.emplace_back([&, t] {
                try {
                    results[static_cast<size_t>(t)] = generate(model.get(), prompt, n_predict);
                } catch (const std::exception &e) {
                    errors[static_cast<size_t>(t)] = e.what();
                }
            });
        }
        for (auto &th : threads) {
            th.join();
        }
        for (int t = 0; t < n_threads; t++) {
            if (!errors[static_cast<size_t>(t)].empty()) {
                std::fprintf(stderr, "thread %d: %s\n", t, errors[static_cast<size_t>(t)].c_str());
                return 1;
            }
            if (results[static_cast<size_t>(t)] != results[0]) {
                std::fprintf(stderr, "thread %d generated different tokens than thread 0\n", t);
                return 1;
            }
        }
        const auto together = generate_together(model.get(), prompt, n_predict, n_threads);
        for (size_t s = 0; s < together.size(); s++) {
            if (together[s] != results[0]) {
                std::fprintf(stderr, "sequence %zu of the shared context generated different tokens\n", s);
                return 1;
            }
        }
        std::printf("ids:");
        for (bitnet_token id : results[0]) {
            std::printf(" %d", id);
        }
        std::printf("\ntext: %s\n", detokenize(model.get(), results[0]).c_str());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "simple_cpp: %s\n", e.what());
        return 1;
    }
    return 0;
}
