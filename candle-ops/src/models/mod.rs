//! Model loading and the forward pass.
//!
//! [`ModelWeights`] is immutable after loading and `Send + Sync`: share it with `Arc` between
//! threads. Everything that changes while a sequence is processed lives in a separate
//! [`KvCache`], one per sequence (llama.cpp's model / context split). [`Model`] bundles the
//! shared weights with the tokenizer and metadata.

mod attention;
pub(crate) mod bitnet;
pub(crate) mod bitnet_b158;
mod block;
pub mod config;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "dummy_cuda.rs"]
mod cuda;
pub(crate) mod head;
pub(crate) mod hf;
mod hf_load;
pub(crate) mod llama_ternary;
mod loader;
mod ops;
mod rows;
mod source;
mod tensor_forward;

pub use cuda::DecodeMode;
pub(crate) use cuda::DecodePlan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitnet_backend::gguf::{GgmlType, GgufFile};
use candle_core::{Device, Tensor};

pub use config::{Architecture, ModelConfig};
pub use head::HeadType;
pub use hf::is_checkpoint_dir;

use crate::batch::{runs_in, Batch, BatchLogits};
use crate::bit_linear::BitLinear;
use crate::chat_template::{ChatMessage, ChatTemplate, TemplateTokens};
use crate::embedding::DenseWeights;
use crate::kv_cache::{KvCache, KvDtype, Run};
use crate::rope::RotaryEmbedding;
use crate::tokenizer::{Tokenizer, VocabMetadata};
use crate::{Error, Result};
use block::TernaryBlock;
use loader::Loader;
use rows::RmsNorm;
use source::WeightSource;
use tensor_forward::TensorModel;

/// Rows the model runs at once (llama.cpp's `n_ubatch`): a larger batch runs in pieces of this
/// many rows, which bounds the intermediate buffers; the pieces give the same results.
const UBATCH: usize = 512;

/// What a block needs besides its weights for one forward pass.
pub(crate) struct Step<'a> {
    pub(crate) layer: usize,
    /// Which rows belong to which sequence, at which positions.
    pub(crate) runs: &'a [Run],
    pub(crate) n_head: usize,
    pub(crate) n_head_kv: usize,
    pub(crate) head_dim: usize,
    pub(crate) rope: &'a RotaryEmbedding,
    pub(crate) cache: &'a mut KvCache,
}

/// Intermediate rows of one forward pass, reused by every block (no per-layer allocations).
#[derive(Default)]
pub(crate) struct Work {
    pub(crate) h: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) a: Vec<f32>,
    pub(crate) heads: Vec<f32>,
    pub(crate) o: Vec<f32>,
    pub(crate) gate: Vec<f32>,
    pub(crate) up: Vec<f32>,
}

/// `buf` resized to `len` values (contents unspecified: every user overwrites them).
pub(crate) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..]
}

/// Which positions [`ModelWeights::forward`] returns logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token (generation): `[n_vocab]`.
    Last,
    /// Every token (scoring, perplexity, tests): `[n_tokens, n_vocab]`.
    All,
}

/// The immutable weights of a model.
pub struct ModelWeights {
    config: ModelConfig,
    token_embd: DenseWeights,
    blocks: Vec<TernaryBlock>,
    output_norm: RmsNorm,
    output: DenseWeights,
    rope: RotaryEmbedding,
    max_context: usize,
    /// The weights placed for the device-generic forward, when the model runs it.
    tensor: Option<TensorModel>,
}

impl std::fmt::Debug for ModelWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWeights")
            .field("config", &self.config)
            .field("token_embd", &self.token_embd)
            .field("output", &self.output)
            .field("device", &self.device().location())
            .finish_non_exhaustive()
    }
}

impl ModelWeights {
    /// Loads the weights of `file`. `path` (the file's path, if it has one) lets ternary tensors
    /// be read without touching the mmap; `max_context` bounds the rope tables and caches
    /// (default: the training context).
    pub fn from_gguf(
        file: &GgufFile,
        path: Option<&Path>,
        max_context: Option<usize>,
    ) -> Result<Self> {
        Self::from_gguf_with_head(file, path, max_context, HeadType::File)
    }

    /// [`Self::from_gguf`] with the LM head stored as `head_type` (quantized once here unless
    /// it is [`HeadType::File`]).
    pub fn from_gguf_with_head(
        file: &GgufFile,
        path: Option<&Path>,
        max_context: Option<usize>,
        head_type: HeadType,
    ) -> Result<Self> {
        let config = ModelConfig::from_gguf(file)?;
        let arch = config.architecture.clone();
        let l = Loader::new(file, path, &arch)?;
        Self::from_source(config, &l, max_context, head_type)
    }

    /// Builds the model from `l`'s tensors (GGUF names), the LM head stored as `head_type`.
    /// The embedding comes first: a source that copies it briefly holds two of it, before the
    /// projections are loaded.
    fn from_source(
        config: ModelConfig,
        l: &(dyn WeightSource + Sync),
        max_context: Option<usize>,
        head_type: HeadType,
    ) -> Result<Self> {
        let (v, e) = (config.n_vocab, config.n_embd);
        let token_embd = l.dense("token_embd.weight", v, e)?;
        // A separate output matrix, when the file has one, is the LM head (bitnet.cpp loads it
        // and then uses token_embd anyway, which is wrong for untied checkpoints).
        let head_name = match l.has("output.weight") {
            true => "output.weight",
            false => "token_embd.weight",
        };
        // A head quantized from streamed rows is made on a second thread while the blocks
        // load: loading the projections leaves a core mostly idle, and the quantization (the
        // most work of the whole load) fills it.
        let (blocks, streamed) = std::thread::scope(|s| {
            let head = head_type
                .dense_type()
                .map(|ty| s.spawn(move || l.quantized_dense(head_name, v, e, ty)));
            let blocks = match config.arch {
                Architecture::BitNetB158 => block::load_blocks(l, &config, bitnet_b158::BLOCK),
                Architecture::BitNet => block::load_blocks(l, &config, bitnet::BLOCK),
                Architecture::LlamaTernary => block::load_blocks(l, &config, llama_ternary::BLOCK),
            };
            let streamed = head.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (blocks, streamed)
        });
        let blocks = blocks?;
        let output = match (streamed.zip(head_type.dense_type()), head_name) {
            (None, "output.weight") => l.dense(head_name, v, e)?,
            (None, _) => token_embd.clone(),
            // Sources that cannot stream rows quantize the table they hold (a tied head: the
            // embedding already in memory, not a second copy of it).
            (Some((streamed, ty)), _) => match streamed? {
                Some(head) => head,
                None if head_name == "output.weight" => {
                    head::quantize_table(&l.dense(head_name, v, e)?, ty)?
                }
                None => head::quantize_table(&token_embd, ty)?,
            },
        };
        let output_norm = l.rms_norm("output_norm.weight", e, config.rms_eps)?;
        let max_context = max_context.unwrap_or(config.n_ctx_train).max(1);
        let freq_factors = l.optional_vector("rope_freqs.weight", config.head_dim / 2)?;
        let rope = RotaryEmbedding::new(
            config.head_dim,
            config.rope_theta,
            config.rope_scale,
            max_context,
            config.rope_style,
            freq_factors.as_deref(),
            &Device::Cpu,
        )?;
        Ok(Self {
            config,
            token_embd,
            blocks,
            output_norm,
            output,
            rope,
            max_context,
            tensor: None,
        })
    }

    /// Places the model for the device-generic Candle-ops forward on `device` (a GPU's weights
    /// are uploaded now). On the CPU the tuned row path stays in use unless `tensor_ops_on_cpu`.
    pub fn placed_on(mut self, device: &Device, tensor_ops_on_cpu: bool) -> Result<Self> {
        self.tensor = match (device, tensor_ops_on_cpu) {
            (Device::Cpu, false) => None,
            _ => Some(TensorModel::new(&self, device)?),
        };
        Ok(self)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.tensor.as_ref().map_or(&Device::Cpu, |t| t.device())
    }

    /// Why single-token steps on `cache` run without a CUDA graph, if they do (capture failed).
    pub fn cuda_graph_error(&self, cache: &KvCache) -> Option<String> {
        cache.cuda_graph_error().map(str::to_owned)
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Longest sequence a cache for this model may hold.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// The token embedding table.
    pub fn token_embedding(&self) -> &DenseWeights {
        &self.token_embd
    }

    /// The LM head (the embedding itself for tied models).
    pub fn output(&self) -> &DenseWeights {
        &self.output
    }

    /// A fresh cache for one sequence of up to `n_ctx` tokens.
    pub fn new_cache(&self, n_ctx: usize, dtype: KvDtype) -> Result<KvCache> {
        self.new_multi_cache(n_ctx, 1, dtype)
    }

    /// A fresh cache for up to `n_seq_max` sequences sharing `n_ctx` positions. With more than
    /// one sequence the budget may exceed [`ModelWeights::max_context`], which then limits each
    /// sequence. A model on the device-generic forward (a GPU) serves one sequence per cache.
    pub fn new_multi_cache(
        &self,
        n_ctx: usize,
        n_seq_max: usize,
        dtype: KvDtype,
    ) -> Result<KvCache> {
        if n_seq_max <= 1 && n_ctx > self.max_context {
            return Err(Error::InvalidArgument(format!(
                "context of {n_ctx} tokens exceeds the model's maximum of {} (raise LoadOptions::max_context)",
                self.max_context
            )));
        }
        let c = &self.config;
        let cache = match &self.tensor {
            None => KvCache::with_sequences(
                c.n_layer,
                c.n_head_kv,
                c.head_dim,
                n_ctx,
                n_seq_max,
                dtype,
                &Device::Cpu,
            )?,
            Some(t) if n_seq_max > 1 => {
                return Err(Error::InvalidArgument(format!(
                    "a model on {:?} serves one sequence per cache (n_seq_max 1, asked for \
                     {n_seq_max}); batching several sequences runs on the CPU",
                    t.device().location()
                )))
            }
            Some(t) => {
                KvCache::on_device(c.n_layer, c.n_head_kv, c.head_dim, n_ctx, dtype, t.device())?
            }
        };
        Ok(cache.with_seq_capacity(self.max_context))
    }

    /// Runs `tokens` at positions `start_pos..` of sequence 0 of `cache` (which must already
    /// hold positions `0..start_pos`; later ones are forgotten first) and returns logits as
    /// selected by `logits`.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        start_pos: usize,
        logits: Logits,
    ) -> Result<Tensor> {
        let mut batch = Batch::new();
        for (i, &t) in tokens.iter().enumerate() {
            let wanted = logits == Logits::All || i + 1 == tokens.len();
            batch.add(t, start_pos + i, 0, wanted);
        }
        if let Some(t) = &self.tensor {
            return self.tensor_pass(t, cache, &batch, logits);
        }
        let out = self.decode(cache, &batch)?;
        let n_vocab = self.config.n_vocab;
        let rows = out.n_outputs();
        let t = Tensor::from_vec(out.into_values(), (rows, n_vocab), &Device::Cpu)?;
        Ok(match logits {
            Logits::Last => t.squeeze(0)?,
            Logits::All => t,
        })
    }

    /// Runs one batch of tokens of any sequences of `cache` (see [`Batch`]) and returns the
    /// logits its tokens asked for. Every projection and the LM head run once over all rows;
    /// attention runs per sequence. Each row's result is bit-identical to running its sequence
    /// alone.
    ///
    /// On failure no sequence of the batch keeps positions from its first one in the batch on.
    ///
    /// A model on the device-generic forward (a GPU) has caches of one sequence, so its batches
    /// hold tokens of sequence 0 only.
    pub fn decode(&self, cache: &mut KvCache, batch: &Batch) -> Result<BatchLogits> {
        if let Some(t) = &self.tensor {
            return self.tensor_decode(t, cache, batch);
        }
        self.check_cache(cache)?;
        let plan = batch.plan(cache, self.config.n_vocab)?;
        cache.prepare(&plan.runs)?;
        let result = self.run_rows(cache, batch, &plan.runs, &plan.order);
        match result {
            Ok(_) => cache.commit(&plan.runs),
            Err(_) => cache.rollback(&plan.runs),
        }
        result
    }

    /// Checks that `cache` was made for this model (layers, context, CPU pages or device
    /// tensors).
    fn check_cache(&self, cache: &KvCache) -> Result<()> {
        if cache.seq_capacity() > self.max_context {
            return Err(Error::InvalidArgument(format!(
                "cache sequences of {} positions exceed the model's maximum of {}",
                cache.seq_capacity(),
                self.max_context
            )));
        }
        if cache.n_layer() != self.config.n_layer {
            return Err(Error::InvalidArgument(format!(
                "cache of {} layers for a model of {}",
                cache.n_layer(),
                self.config.n_layer
            )));
        }
        if cache.is_paged() != self.tensor.is_none() {
            return Err(Error::InvalidArgument(format!(
                "a KV cache on {:?} for a model on {:?}: create the cache with the model's \
                 new_cache",
                cache.device().location(),
                self.device().location()
            )));
        }
        Ok(())
    }

    /// [`ModelWeights::decode`] on the device-generic forward: one sequence's run.
    fn tensor_decode(
        &self,
        t: &TensorModel,
        cache: &mut KvCache,
        batch: &Batch,
    ) -> Result<BatchLogits> {
        let wanted = batch.logits();
        let n_vocab = self.config.n_vocab;
        // Only the last row's logits (generation) take the single-row head and, on CUDA, the
        // graph-captured step; otherwise every row's are computed and the wanted ones kept.
        let last_only = wanted.iter().rev().skip(1).all(|&w| !w);
        let mode = match last_only {
            true => Logits::Last,
            false => Logits::All,
        };
        let out = self.tensor_pass(t, cache, batch, mode)?;
        if batch.n_outputs() == 0 {
            return Ok(BatchLogits::new(Vec::new(), n_vocab, wanted));
        }
        let rows = out
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let values = match mode {
            Logits::Last => rows,
            Logits::All => rows
                .chunks_exact(n_vocab)
                .zip(wanted)
                .filter(|(_, &w)| w)
                .flat_map(|(r, _)| r.iter().copied())
                .collect(),
        };
        Ok(BatchLogits::new(values, n_vocab, wanted))
    }

    /// The device-generic forward over `batch`, whose tokens must all be sequence 0's (a device
    /// cache holds one sequence); logits as a tensor on the model's device. On failure the
    /// sequence keeps only the positions before the batch.
    fn tensor_pass(
        &self,
        t: &TensorModel,
        cache: &mut KvCache,
        batch: &Batch,
        logits: Logits,
    ) -> Result<Tensor> {
        self.check_cache(cache)?;
        let plan = batch.plan(cache, self.config.n_vocab)?;
        let [run] = plan.runs[..] else {
            return Err(Error::InvalidArgument(format!(
                "a model on {:?} runs one sequence per batch; this batch holds {}",
                t.device().location(),
                plan.runs.len()
            )));
        };
        cache.prepare(&plan.runs)?;
        let result = tensor_forward::forward(self, t, cache, batch.tokens(), run.start_pos, logits);
        match result {
            Ok(_) => cache.commit(&plan.runs),
            Err(_) => cache.rollback(&plan.runs),
        }
        result
    }

    /// The forward pass over the planned rows (`order[row]` = batch index of `row`), in pieces
    /// of at most [`UBATCH`] rows.
    fn run_rows(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        runs: &[Run],
        order: &[usize],
    ) -> Result<BatchLogits> {
        let e = self.config.n_embd;
        let wanted = batch.logits();
        // Batch index → its row among the outputs (batch order).
        let mut next = 0;
        let out_row: Vec<Option<usize>> = wanted
            .iter()
            .map(|&w| {
                w.then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let mut picked = vec![0f32; next * e];
        let mut work = Work::default();
        for r0 in (0..order.len()).step_by(UBATCH) {
            let rows = &order[r0..(r0 + UBATCH).min(order.len())];
            let piece = runs_in(runs, r0, rows.len());
            let x = self.run_blocks(cache, batch, rows, &piece, &mut work)?;
            for (k, &i) in rows.iter().enumerate() {
                if let Some(o) = out_row[i] {
                    picked[o * e..(o + 1) * e].copy_from_slice(&x[k * e..(k + 1) * e]);
                }
            }
        }
        let n_vocab = self.config.n_vocab;
        if picked.is_empty() {
            return Ok(BatchLogits::new(Vec::new(), n_vocab, wanted));
        }
        let mut normed = vec![0f32; picked.len()];
        self.output_norm.forward(&picked, &mut normed)?;
        let out = self.output.matmul_rows(&normed)?;
        Ok(BatchLogits::new(out, n_vocab, wanted))
    }

    /// Every block over `rows` (batch indices, grouped into `runs`); the final residual stream.
    fn run_blocks(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        rows: &[usize],
        runs: &[Run],
        work: &mut Work,
    ) -> Result<Vec<f32>> {
        let tokens: Vec<u32> = rows.iter().map(|&i| batch.tokens()[i]).collect();
        let mut x = self.token_embd.lookup_rows(&tokens)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let mut step = Step {
                layer,
                runs,
                n_head: self.config.n_head,
                n_head_kv: self.config.n_head_kv,
                head_dim: self.config.head_dim,
                rope: &self.rope,
                cache,
            };
            block.forward(&mut x, rows.len(), &mut step, work)?;
        }
        Ok(x)
    }

    /// Ternary projections of every block, in order.
    pub fn ternary_layers(&self) -> Vec<&BitLinear> {
        self.blocks.iter().flat_map(|b| b.projections()).collect()
    }

    /// Weight bytes one decode step reads: every repacked ternary matrix plus the LM head.
    /// (The KV cache adds `2 · n_layer · n_head_kv · head_dim · bytes · position count`.)
    pub fn weight_bytes_per_token(&self) -> usize {
        let ternary: usize = self
            .ternary_layers()
            .iter()
            .map(|l| l.weights().packed_bytes())
            .sum();
        ternary + self.output.size_in_bytes()
    }

    /// Number of parameters (ternary, embedding, head if untied, norms excluded).
    pub fn n_params(&self) -> u64 {
        let ternary: u64 = self
            .ternary_layers()
            .iter()
            .map(|l| (l.in_features() * l.out_features()) as u64)
            .sum();
        let table = (self.config.n_vocab * self.config.n_embd) as u64;
        let untied = self.output.name() != self.token_embd.name();
        ternary + table * if untied { 2 } else { 1 }
    }
}

/// Options for [`Model::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where the model runs: `Device::Cpu` (the tuned CPU path) or a GPU from
    /// `Device::new_cuda(ordinal)` (needs the `cuda` feature; the device-generic forward, one
    /// sequence per cache).
    pub device: Device,
    /// Run the device-generic Candle-ops forward even on the CPU (slower than the tuned path;
    /// it exists to check that path on machines without a GPU).
    pub tensor_ops_on_cpu: bool,
    /// Threads for the kernels (process-wide: `bitnet_backend::threads`); `None` keeps the
    /// current setting (default: `BITNET_NUM_THREADS` or every available CPU).
    pub n_threads: Option<usize>,
    /// Longest context any cache may hold; `None` = the training context.
    pub max_context: Option<usize>,
    /// A `tokenizer.json` to use instead of the GGUF vocabulary (it must assign the same ids).
    pub tokenizer_json: Option<PathBuf>,
    /// Hub revision (branch, tag or commit) for [`Model::from_hf`] with a repo id; `None` =
    /// `main`.
    pub revision: Option<String>,
    /// Never touch the network for [`Model::from_hf`] (also `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// How the LM head is stored: as in the file (default) or quantized once at load.
    pub head_type: HeadType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            tensor_ops_on_cpu: false,
            n_threads: None,
            max_context: None,
            tokenizer_json: None,
            revision: None,
            offline: false,
            head_type: HeadType::File,
        }
    }
}

impl LoadOptions {
    /// `weights` placed as these options ask (device, tensor ops on the CPU).
    fn place(&self, weights: ModelWeights) -> Result<ModelWeights> {
        weights.placed_on(&self.device, self.tensor_ops_on_cpu)
    }

    /// Refuses options that cannot work together, then applies the thread count; called before
    /// any weight is read, so a refused load costs nothing.
    fn check_and_apply_threads(&self) -> Result<()> {
        // The quantized heads run on the CPU dense kernels only; the GPU forward needs a float
        // table it can upload.
        if !matches!(self.device, Device::Cpu) && self.head_type != HeadType::File {
            return Err(Error::InvalidArgument(format!(
                "head type {} runs on the CPU only; on {:?} use head type file",
                self.head_type,
                self.device.location()
            )));
        }
        if let Some(n) = self.n_threads {
            if n == 0 {
                return Err(Error::InvalidArgument(
                    "n_threads must be at least 1".into(),
                ));
            }
            bitnet_backend::threads::set_num_threads(n);
        }
        Ok(())
    }
}

/// Facts about a model that are not weights.
#[derive(Clone, Debug)]
struct ModelInfo {
    name: Option<String>,
    chat_template: Option<String>,
    /// Bytes of the GGUF file, or of a checkpoint's tensor data.
    file_size: u64,
    /// How the ternary weights are stored (`I2_S`, `HF-packed`, ...).
    weight_format: String,
}

/// A model's weights and what describes them, without a tokenizer: everything `bitnet bench`
/// needs, so a file whose vocabulary is absent or unsupported can still be measured.
#[derive(Clone, Debug)]
pub struct BareModel {
    weights: Arc<ModelWeights>,
    info: Arc<ModelInfo>,
}

impl BareModel {
    /// Loads the weights of a GGUF file.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file, Some(path), options)
    }

    /// Loads the weights of an already opened GGUF (`path` as in [`ModelWeights::from_gguf`]).
    pub fn from_gguf(file: &GgufFile, path: Option<&Path>, options: &LoadOptions) -> Result<Self> {
        options.check_and_apply_threads()?;
        let weights = options.place(ModelWeights::from_gguf_with_head(
            file,
            path,
            options.max_context,
            options.head_type,
        )?)?;
        let info = ModelInfo {
            name: file
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            chat_template: file
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            file_size: file.mmap().len() as u64,
            weight_format: dominant_type(file).map_or("unknown", type_name).to_owned(),
        };
        Ok(Self {
            weights: Arc::new(weights),
            info: Arc::new(info),
        })
    }

    /// Loads the weights of a Hugging Face checkpoint folder or hub repo id, with no conversion
    /// (see [`Model::from_hf`]).
    pub fn from_hf(dir_or_repo: &str, options: &LoadOptions) -> Result<Self> {
        Ok(hf_load::load(dir_or_repo, options)?.0)
    }

    /// The shared weights.
    pub fn weights(&self) -> &Arc<ModelWeights> {
        &self.weights
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.weights.device()
    }

    /// A one-line description in llama.cpp's style: architecture, size, weight type.
    pub fn description(&self) -> String {
        let params = self.weights.n_params() as f64;
        let size = if params >= 1e9 {
            format!("{:.1}B", params / 1e9)
        } else {
            format!("{:.0}M", params / 1e6)
        };
        format!(
            "{} {size} {}",
            self.weights.config().architecture,
            self.info.weight_format
        )
    }

    /// Size of the model file (or of a checkpoint's tensor data) in bytes.
    pub fn file_size(&self) -> u64 {
        self.info.file_size
    }
}

/// A loaded model: shared weights, tokenizer and metadata. Cloning is cheap (`Arc`s).
#[derive(Clone, Debug)]
pub struct Model {
    weights: Arc<ModelWeights>,
    tokenizer: Arc<Tokenizer>,
    info: Arc<ModelInfo>,
}

impl Model {
    /// Opens and loads a GGUF model file.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file, Some(path), options)
    }

    /// Loads from an already opened GGUF (`path` as in [`ModelWeights::from_gguf`]).
    pub fn from_gguf(file: &GgufFile, path: Option<&Path>, options: &LoadOptions) -> Result<Self> {
        let bare = BareModel::from_gguf(file, path, options)?;
        let meta = VocabMetadata::from_gguf(file)?;
        Self::with_vocabulary(bare, &meta, options)
    }

    /// Loads a Hugging Face checkpoint directly, with no conversion and no cache file: a folder
    /// (`config.json`, `model.safetensors` or its shards, `tokenizer.json` or
    /// `tokenizer.model`), or a hub repo id fetched into the Hugging Face cache (at
    /// `options.revision`, offline with `options.offline`), exactly as `bitnet convert` accepts
    /// them. The model equals the one the converted GGUF gives when that file keeps the
    /// embedding in the checkpoint's precision (same plan, same tokenizer metadata).
    pub fn from_hf(dir_or_repo: &str, options: &LoadOptions) -> Result<Self> {
        let (bare, vocab) = hf_load::load(dir_or_repo, options)?;
        let meta = VocabMetadata::from_metadata(&|k| hf::lookup(&vocab, k))?;
        Self::with_vocabulary(bare, &meta, options)
    }

    /// The model of `bare` with the tokenizer of `meta` (or `options.tokenizer_json`).
    fn with_vocabulary(
        bare: BareModel,
        meta: &VocabMetadata,
        options: &LoadOptions,
    ) -> Result<Self> {
        let arch = bare.weights.config().architecture.clone();
        if meta.tokens.len() != bare.weights.config().n_vocab {
            return Err(Error::Config(format!(
                "the vocabulary has {} tokens but the embedding has {} rows",
                meta.tokens.len(),
                bare.weights.config().n_vocab
            )));
        }
        let tokenizer = match &options.tokenizer_json {
            Some(p) => Tokenizer::from_file_checked(p, meta, &arch)?,
            None => Tokenizer::from_metadata(meta, &arch)?,
        };
        Ok(Self {
            weights: bare.weights,
            tokenizer: Arc::new(tokenizer),
            info: bare.info,
        })
    }

    /// The shared weights.
    pub fn weights(&self) -> &Arc<ModelWeights> {
        &self.weights
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.weights.device()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> &str {
        &self.config().architecture
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.config().n_vocab
    }

    /// Training context length.
    pub fn n_ctx_train(&self) -> usize {
        self.config().n_ctx_train
    }

    /// Hidden size.
    pub fn n_embd(&self) -> usize {
        self.config().n_embd
    }

    /// `general.name`, if present.
    pub fn name(&self) -> Option<&str> {
        self.info.name.as_deref()
    }

    /// A one-line description in llama.cpp's style: architecture, size, weight type.
    pub fn description(&self) -> String {
        self.bare().description()
    }

    /// The weights and their description, without the tokenizer.
    pub fn bare(&self) -> BareModel {
        BareModel {
            weights: self.weights.clone(),
            info: self.info.clone(),
        }
    }

    /// Size of the model file (or of a checkpoint's tensor data) in bytes.
    pub fn file_size(&self) -> u64 {
        self.info.file_size
    }

    /// `tokenizer.chat_template`, if present.
    pub fn chat_template(&self) -> Option<&str> {
        self.info.chat_template.as_deref()
    }

    /// Formats a conversation with the model's template (BitNet's when it has none).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tok = &self.tokenizer;
        let text = |id: Option<u32>| {
            id.and_then(|i| tok.decode(&[i], false).ok())
                .unwrap_or_default()
        };
        let tokens = TemplateTokens {
            bos: text(tok.bos()),
            eos: text(tok.eos()),
        };
        ChatTemplate::from_metadata(self.chat_template()).apply(
            messages,
            add_generation_prompt,
            &tokens,
        )
    }

    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.tokenizer.bos()
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.tokenizer.eos()
    }

    /// End-of-turn id.
    pub fn eot(&self) -> Option<u32> {
        self.tokenizer.eot()
    }

    /// Whether generation stops at `id`.
    pub fn token_is_eog(&self, id: u32) -> bool {
        self.tokenizer.is_eog(id)
    }

    /// A cache for one sequence of up to `n_ctx` tokens.
    pub fn new_cache(&self, n_ctx: usize, dtype: KvDtype) -> Result<KvCache> {
        self.weights.new_cache(n_ctx, dtype)
    }

    /// Logits `[n_vocab]` of the last of `tokens`, run at positions `start_pos..` of `cache`.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], start_pos: usize) -> Result<Tensor> {
        self.weights.forward(cache, tokens, start_pos, Logits::Last)
    }

    /// Logits `[n_tokens, n_vocab]` of every one of `tokens`.
    pub fn forward_all(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        start_pos: usize,
    ) -> Result<Tensor> {
        self.weights.forward(cache, tokens, start_pos, Logits::All)
    }
}

/// The most common ternary tensor type of the file (for the description).
fn dominant_type(file: &GgufFile) -> Option<GgmlType> {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in file.tensors() {
        if matches!(
            t.ggml_type,
            GgmlType::I2S | GgmlType::TQ1_0 | GgmlType::TQ2_0
        ) {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.ggml_type, 1)),
            }
        }
    }
    counts.into_iter().max_by_key(|&(_, n)| n).map(|(t, _)| t)
}

fn type_name(t: GgmlType) -> &'static str {
    match t {
        GgmlType::I2S => "I2_S",
        GgmlType::TQ1_0 => "TQ1_0",
        GgmlType::TQ2_0 => "TQ2_0",
        _ => "other",
    }
}
