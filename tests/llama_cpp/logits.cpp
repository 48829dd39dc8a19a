// Test host for the ggml-bitnet plugin, built against the pinned llama.cpp (see run.sh).
//
//   logits dump <backend-dir> <model.gguf> <out.bin> <token ids, comma-separated> <n_threads> <n_gen>
//       Loads the backends in <backend-dir> (llama.cpp's bin/) plus GGML_BACKEND_PATH, evaluates
//       the prompt in one batch, then generates n_gen tokens greedily one at a time; writes the
//       logits of every prompt position and every generation step (float32, × n_vocab) to
//       out.bin; prints the generated ids, how many MUL_MAT nodes with a TQ1_0/TQ2_0 weight ran
//       and how many of those had their weight in the plugin's buffer ("BITNET": only the
//       plugin can compute with it), how many F16 head mat-muls ran and how many of those were
//       for a single token, and how many of all those mat-muls wrote their output to host
//       memory (where the CPU backend reads it without a copy).
//   logits compare <a.bin> <b.bin> <max_rel>
//       Prints the largest element-wise relative difference |a-b| / max(|b|, 1e-3·max|b|) and
//       the number of bit-identical values; exits 1 if the difference exceeds max_rel.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct Counts {
    int ternary = 0;
    int on_plugin = 0;
    int head = 0;
    int single_token_heads = 0;
    int outputs_in_host_memory = 0;
};

static bool is_ternary_mul_mat(const ggml_tensor * t) {
    return t->op == GGML_OP_MUL_MAT && t->src[0] &&
           (t->src[0]->type == GGML_TYPE_TQ2_0 || t->src[0]->type == GGML_TYPE_TQ1_0);
}

// The LM head: an F16 mat-mul by the output (or tied embedding) matrix.
static bool is_head_mul_mat(const ggml_tensor * t) {
    return t->op == GGML_OP_MUL_MAT && t->src[0] && t->src[0]->type == GGML_TYPE_F16 &&
           (std::strcmp(t->src[0]->name, "output.weight") == 0 ||
            std::strcmp(t->src[0]->name, "token_embd.weight") == 0);
}

// The weight lives in the plugin's buffer, which no other backend can read: the scheduler had
// to run the mat-mul there.
static bool on_plugin(const ggml_tensor * t) {
    const ggml_tensor * w = t->src[0];
    return w->buffer && std::strcmp(ggml_backend_buffer_name(w->buffer), "BITNET") == 0;
}

static bool observe(ggml_tensor * t, bool ask, void * user_data) {
    if (ask) {
        return is_ternary_mul_mat(t) || is_head_mul_mat(t);
    }
    auto * c = static_cast<Counts *>(user_data);
    if (is_ternary_mul_mat(t)) {
        c->ternary++;
        c->on_plugin += on_plugin(t);
    }
    if (is_head_mul_mat(t)) {
        c->head++;
        c->single_token_heads += ggml_nrows(t->src[1]) == 1;
    }
    c->outputs_in_host_memory += t->buffer && ggml_backend_buffer_is_host(t->buffer);
    return true;
}

static int dump(const char * backend_dir, const char * model_path, const char * out_path, const char * prompt, int n_threads,
                int n_gen) {
    llama_backend_init();
    // DL build: the CPU backend and GGML_BACKEND_PATH's plugin are loaded here.
    ggml_backend_load_all_from_path(backend_dir);
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        std::fprintf(stderr, "logits: cannot load %s\n", model_path);
        return 1;
    }
    Counts counts;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.cb_eval = observe;
    cp.cb_eval_user_data = &counts;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "logits: cannot create a context\n");
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    // Token ids, not text: the test vocabulary cannot tokenize arbitrary text.
    std::vector<llama_token> toks;
    for (const char * p = prompt; *p;) {
        char * end = nullptr;
        long id = std::strtol(p, &end, 10);
        if (end == p || id < 0 || id >= n_vocab) {
            std::fprintf(stderr, "logits: bad token list '%s'\n", prompt);
            return 1;
        }
        toks.push_back((llama_token) id);
        p = *end == ',' ? end + 1 : end;
    }
    const int n = (int) toks.size();
    if (n == 0) {
        std::fprintf(stderr, "logits: no tokens\n");
        return 1;
    }
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
        std::fprintf(stderr, "logits: decode failed\n");
        return 1;
    }
    FILE * f = std::fopen(out_path, "wb");
    if (!f) {
        std::fprintf(stderr, "logits: cannot write %s\n", out_path);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        std::fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, f);
    }
    std::string generated;
    for (int step = 0; step < n_gen; step++) {
        const float * l = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        for (int v = 1; v < n_vocab; v++) {
            if (l[v] > l[best]) {
                best = v;
            }
        }
        generated += (step ? "," : "") + std::to_string(best);
        llama_batch one = llama_batch_get_one(&best, 1);
        if (llama_decode(ctx, one) != 0) {
            std::fprintf(stderr, "logits: decode of generated token failed\n");
            return 1;
        }
        std::fwrite(llama_get_logits_ith(ctx, -1), sizeof(float), n_vocab, f);
    }
    std::fclose(f);
    std::printf("generated=%s\n", generated.c_str());
    std::printf("tokens=%d vocab=%d head_mul_mats=%d single_token_heads=%d ternary_mul_mats=%d on_plugin=%d "
                "outputs_in_host_memory=%d\n",
                n, n_vocab, counts.head, counts.single_token_heads, counts.ternary, counts.on_plugin,
                counts.outputs_in_host_memory);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

static std::vector<float> read_floats(const char * path) {
    std::vector<float> v;
    FILE * f = std::fopen(path, "rb");
    if (!f) {
        return v;
    }
    float x;
    while (std::fread(&x, sizeof x, 1, f) == 1) {
        v.push_back(x);
    }
    std::fclose(f);
    return v;
}

static int compare(const char * a_path, const char * b_path, double max_rel) {
    std::vector<float> a = read_floats(a_path), b = read_floats(b_path);
    if (a.empty() || a.size() != b.size()) {
        std::fprintf(stderr, "compare: sizes differ or empty (%zu vs %zu)\n", a.size(), b.size());
        return 1;
    }
    double bmax = 0;
    for (float y : b) {
        bmax = std::fmax(bmax, std::fabs(y));
    }
    double worst = 0;
    size_t identical = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (std::memcmp(&a[i], &b[i], sizeof(float)) == 0) {
            identical++;
        }
        double d = std::fabs((double) a[i] - b[i]) / std::fmax(std::fabs(b[i]), 1e-3 * bmax);
        if (!(d <= worst)) {
            worst = d;
        }
    }
    std::printf("values=%zu identical=%zu max_rel_diff=%.3g\n", a.size(), identical, worst);
    return worst <= max_rel ? 0 : 1;
}

int main(int argc, char ** argv) {
    if (argc == 8 && std::string(argv[1]) == "dump") {
        return dump(argv[2], argv[3], argv[4], argv[5], std::atoi(argv[6]), std::atoi(argv[7]));
    }
    if (argc == 5 && std::string(argv[1]) == "compare") {
        return compare(argv[2], argv[3], std::atof(argv[4]));
    }
    std::fprintf(stderr, "usage: logits dump <backend-dir> <model> <out.bin> <ids> <threads> <n_gen> | compare <a> <b> <max_rel>\n");
    return 2;
}
