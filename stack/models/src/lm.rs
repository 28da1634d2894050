//! Byte-level GRU language model with a batched, per-sequence-state decode step.
//!
//! Architecture: `embed` (`[256, embed_dim]`) → single-layer GRU (`gru.*`, PyTorch naming) →
//! `head` (`[256, hidden_dim]` + bias). A token is one byte; a sequence's whole state is its
//! GRU hidden vector ([`SeqState`]), so sequences of different lengths batch freely: stack the
//! states, run one step, split them again.
//!
//! A token is a raw byte: generated text is UTF-8 only once consecutive bytes are assembled
//! (the server does that, holding back incomplete sequences).

use crate::{sampling, ModelError, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::rnn::{GRUConfig, GRUState, RNN};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap, GRU};
use rand::SeedableRng;
use std::path::Path;

/// Vocabulary size of the byte-level model.
pub const VOCAB_SIZE: usize = 256;

/// Layer sizes of a [`ByteLm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LmConfig {
    pub embed_dim: usize,
    pub hidden_dim: usize,
}

impl Default for LmConfig {
    /// 64-wide embeddings, 512-wide GRU: about 1 M multiply-adds per token.
    fn default() -> Self {
        Self {
            embed_dim: 64,
            hidden_dim: 512,
        }
    }
}

/// One sequence's recurrent state: its GRU hidden vector, `[1, hidden_dim]`.
#[derive(Debug, Clone)]
pub struct SeqState {
    h: Tensor,
}

/// The language model. Cheap to clone.
#[derive(Clone)]
pub struct ByteLm {
    embed: Embedding,
    gru: GRU,
    head: Linear,
    config: LmConfig,
    params: crate::Params,
}

impl std::fmt::Debug for ByteLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteLm")
            .field("config", &self.config)
            .finish()
    }
}

impl ByteLm {
    /// Builds the layers through `vb`; `varmap` (the one behind `vb`) is kept for saving.
    pub fn new(config: LmConfig, vb: VarBuilder, varmap: VarMap) -> Result<Self> {
        Self::build(config, vb, crate::Params::Trainable(varmap))
    }

    fn build(config: LmConfig, vb: VarBuilder, params: crate::Params) -> Result<Self> {
        for (field, v) in [
            ("embed_dim", config.embed_dim),
            ("hidden_dim", config.hidden_dim),
        ] {
            if v == 0 {
                return Err(ModelError::Config {
                    field,
                    value: "0".into(),
                    expected: "a positive size",
                });
            }
        }
        let embed = candle_nn::embedding(VOCAB_SIZE, config.embed_dim, vb.pp("embed"))?;
        let gru = candle_nn::rnn::gru(
            config.embed_dim,
            config.hidden_dim,
            GRUConfig::default(),
            vb.pp("gru"),
        )?;
        let head = candle_nn::linear(config.hidden_dim, VOCAB_SIZE, vb.pp("head"))?;
        Ok(Self {
            embed,
            gru,
            head,
            config,
            params,
        })
    }

    /// A copy for serving: same weights as plain tensors (copied, so training `self` further
    /// does not change it), so decoding records no autograd graph at all. A frozen model has
    /// no [`ByteLm::varmap`]; it still [`ByteLm::save`]s.
    pub fn frozen(&self) -> Result<Self> {
        let (vb, params) = self.params.freeze()?;
        Self::build(self.config, vb, params)
    }

    /// A model whose weights are a pure function of `seed`.
    pub fn seeded(config: LmConfig, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Self::new(config, vb, varmap.clone())?;
        crate::seeded_init(&varmap, seed)?;
        Ok(model)
    }

    /// Loads weights saved by [`ByteLm::save`]; sizes are read from the tensor shapes.
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = crate::read_safetensors(path)?;
        let embed = crate::shape_of(&tensors, "embed.weight", 2, path)?;
        let w_hh = crate::shape_of(&tensors, "gru.weight_hh_l0", 2, path)?;
        let config = LmConfig {
            embed_dim: embed[1],
            hidden_dim: w_hh[1],
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Self::new(config, vb, varmap.clone())?;
        crate::assign_all(&varmap, &tensors, path)?;
        Ok(model)
    }

    /// Writes all weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.params.save(path)
    }

    /// Layer sizes.
    pub fn config(&self) -> LmConfig {
        self.config
    }

    /// The variables, for an optimiser; `None` for a [`ByteLm::frozen`] model.
    pub fn varmap(&self) -> Option<&VarMap> {
        self.params.varmap()
    }

    /// The state of a sequence that has seen nothing yet.
    pub fn initial_state(&self) -> Result<SeqState> {
        Ok(SeqState {
            h: self.gru.zero_state(1)?.h,
        })
    }

    /// One decode step for a batch of independent sequences: feeds `tokens[i]` to the sequence
    /// whose state is `states[i]`, advances that state in place and returns the next-token
    /// logits, one `Vec` of [`VOCAB_SIZE`] per sequence.
    ///
    /// The new states are detached: no autograd graph links one step to the next, even on a
    /// trainable model (which still records, and drops, one step's graph per call; serve a
    /// [`ByteLm::frozen`] copy to record none). A sequence decoded for any number of steps
    /// holds one `[1, hidden_dim]` tensor.
    ///
    /// Errors when the lengths differ or a token is ≥ [`VOCAB_SIZE`].
    pub fn step(&self, tokens: &[u32], states: &mut [&mut SeqState]) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != states.len() {
            return Err(ModelError::Input(format!(
                "{} tokens for {} sequence states",
                tokens.len(),
                states.len()
            )));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(t) = tokens.iter().find(|t| **t as usize >= VOCAB_SIZE) {
            return Err(ModelError::Input(format!(
                "token {t} is outside the byte vocabulary 0..{VOCAB_SIZE}"
            )));
        }
        let x = self
            .embed
            .forward(&Tensor::from_slice(tokens, tokens.len(), &Device::Cpu)?)?;
        let h = Tensor::cat(&states.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 0)?;
        let next = self.gru.step(&x, &GRUState { h })?.h;
        let logits = self.head.forward(&next)?.to_vec2::<f32>()?;
        for (i, state) in states.iter_mut().enumerate() {
            state.h = next.narrow(0, i, 1)?.contiguous()?.detach();
        }
        Ok(logits)
    }

    /// Teacher-forced logits for training: `tokens` `[batch, time]` (u32) → `[batch, time, 256]`.
    pub fn forward_train(&self, tokens: &Tensor) -> Result<Tensor> {
        let (batch, time) = tokens.dims2()?;
        let x = self.embed.forward(tokens)?;
        let mut state = self.gru.zero_state(batch)?;
        let mut outs = Vec::with_capacity(time);
        for t in 0..time {
            state = self.gru.step(&x.narrow(1, t, 1)?.squeeze(1)?, &state)?;
            outs.push(self.head.forward(&state.h)?);
        }
        Ok(Tensor::stack(&outs, 1)?)
    }

    /// Unbatched reference generation: feeds `prompt`, then samples `max_tokens` tokens with
    /// [`sampling::sample_token`] and an RNG seeded by `seed`. Errors on an empty prompt.
    pub fn generate(
        &self,
        prompt: &[u8],
        max_tokens: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<Vec<u32>> {
        let (&last, head) = prompt
            .split_last()
            .ok_or_else(|| ModelError::Input("empty prompt".into()))?;
        let mut state = self.initial_state()?;
        for &b in head {
            self.step(&[u32::from(b)], &mut [&mut state])?;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut token = u32::from(last);
        let mut out = Vec::with_capacity(max_tokens);
        for _ in 0..max_tokens {
            let logits = self.step(&[token], &mut [&mut state])?;
            token = sampling::sample_token(&logits[0], temperature, &mut rng);
            out.push(token);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn small() -> LmConfig {
        LmConfig {
            embed_dim: 8,
            hidden_dim: 16,
        }
    }

    #[test]
    fn step_returns_one_vocab_row_per_sequence() {
        let lm = ByteLm::seeded(small(), 0).expect("lm");
        let mut a = lm.initial_state().expect("a");
        let mut b = lm.initial_state().expect("b");
        let logits = lm.step(&[1, 200], &mut [&mut a, &mut b]).expect("step");
        assert_eq!(logits.len(), 2);
        assert!(logits.iter().all(|l| l.len() == VOCAB_SIZE));
    }

    #[test]
    fn same_seed_same_generation_and_other_seed_differs() {
        let g = |model_seed| {
            ByteLm::seeded(small(), model_seed)
                .expect("lm")
                .generate(b"hello", 20, 0.0, 0)
                .expect("gen")
        };
        assert_eq!(g(5), g(5));
        assert_ne!(g(5), g(6));
    }

    #[test]
    fn sampling_seed_controls_sampled_generation() {
        let lm = ByteLm::seeded(small(), 1).expect("lm");
        let a = lm.generate(b"x", 30, 1.0, 11).expect("a");
        let b = lm.generate(b"x", 30, 1.0, 11).expect("b");
        let c = lm.generate(b"x", 30, 1.0, 12).expect("c");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn save_then_load_gives_identical_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lm.safetensors");
        let lm = ByteLm::seeded(small(), 3).expect("lm");
        lm.save(&path).expect("save");
        let loaded = ByteLm::load(&path).expect("load");
        assert_eq!(loaded.config(), small());
        assert_eq!(
            lm.generate(b"abc", 25, 0.7, 4).expect("a"),
            loaded.generate(b"abc", 25, 0.7, 4).expect("b")
        );
    }

    /// Three sequences with different prompt lengths decoded together, joining at different
    /// steps (as the continuous batcher does), produce the same tokens and (nearly) the same
    /// logits as each decoded alone.
    #[test]
    fn batched_decode_equals_unbatched_decode() {
        let lm = ByteLm::seeded(LmConfig::default(), 2).expect("lm");
        let prompts: [&[u8]; 3] = [b"a", b"the quick", b"zz top"];
        let n = 12;
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| lm.generate(p, n, 0.0, 0).expect("alone"))
            .collect();

        struct Seq {
            input: Vec<u32>,
            pos: usize,
            state: SeqState,
            out: Vec<u32>,
        }
        let mut seqs: Vec<Seq> = prompts
            .iter()
            .map(|p| Seq {
                input: p.iter().map(|b| u32::from(*b)).collect(),
                pos: 0,
                state: lm.initial_state().expect("state"),
                out: vec![],
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for step in 0..40 {
            // Sequence i joins the batch at step 2*i.
            let active: Vec<usize> = (0..seqs.len())
                .filter(|&i| step >= 2 * i && seqs[i].out.len() < n)
                .collect();
            if active.is_empty() {
                continue;
            }
            let tokens: Vec<u32> = active
                .iter()
                .map(|&i| {
                    let s = &seqs[i];
                    s.input
                        .get(s.pos)
                        .copied()
                        .unwrap_or_else(|| *s.out.last().expect("decoding"))
                })
                .collect();
            let mut states: Vec<SeqState> = active.iter().map(|&i| seqs[i].state.clone()).collect();
            let mut refs: Vec<&mut SeqState> = states.iter_mut().collect();
            let logits = lm.step(&tokens, &mut refs).expect("step");
            for (k, &i) in active.iter().enumerate() {
                let s = &mut seqs[i];
                s.state = states[k].clone();
                s.pos += 1;
                if s.pos >= s.input.len() {
                    s.out
                        .push(sampling::sample_token(&logits[k], 0.0, &mut rng));
                }
            }
        }
        for (s, a) in seqs.iter().zip(&alone) {
            assert_eq!(&s.out, a);
        }
    }

    /// The server's memory bug: each step's state used to hang off the previous step's
    /// autograd graph, so a long decode held every step's tensors.
    #[test]
    fn decode_state_is_detached_even_on_a_trainable_model() {
        let lm = ByteLm::seeded(small(), 4).expect("lm");
        assert!(lm.varmap().is_some());
        let mut s = lm.initial_state().expect("s");
        for t in 0..50u32 {
            lm.step(&[t], &mut [&mut s]).expect("step");
            assert!(!s.h.track_op(), "state after step {t} records a graph");
        }
    }

    #[test]
    fn frozen_model_records_no_graph_and_generates_the_same_tokens() {
        let lm = ByteLm::seeded(small(), 9).expect("lm");
        let frozen = lm.frozen().expect("frozen");
        assert!(frozen.varmap().is_none());
        assert_eq!(
            lm.generate(b"abc", 40, 0.8, 2).expect("trainable"),
            frozen.generate(b"abc", 40, 0.8, 2).expect("frozen")
        );
        let x = Tensor::from_slice(&[1u32, 2, 3], (1, 3), &Device::Cpu).expect("x");
        assert!(lm.forward_train(&x).expect("t").track_op());
        assert!(!frozen.forward_train(&x).expect("f").track_op());
        // Training the original further does not move the frozen copy.
        let before = frozen.generate(b"q", 10, 0.0, 0).expect("before");
        crate::seeded_init(lm.varmap().expect("trainable"), 77).expect("reinit");
        assert_eq!(frozen.generate(b"q", 10, 0.0, 0).expect("after"), before);
    }

    #[test]
    fn frozen_model_saves_weights_that_load_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lm.safetensors");
        let frozen = ByteLm::seeded(small(), 5)
            .expect("lm")
            .frozen()
            .expect("frozen");
        frozen.save(&path).expect("save");
        let loaded = ByteLm::load(&path).expect("load");
        assert_eq!(
            frozen.generate(b"hi", 20, 0.5, 1).expect("a"),
            loaded.generate(b"hi", 20, 0.5, 1).expect("b")
        );
    }

    #[test]
    fn mismatched_step_inputs_are_errors() {
        let lm = ByteLm::seeded(small(), 0).expect("lm");
        let mut a = lm.initial_state().expect("a");
        assert!(lm.step(&[1, 2], &mut [&mut a]).is_err());
        assert!(lm.step(&[256], &mut [&mut a]).is_err());
        assert!(lm.generate(b"", 3, 0.0, 0).is_err());
    }

    #[test]
    fn forward_train_matches_step_by_step_logits() {
        let lm = ByteLm::seeded(small(), 8).expect("lm");
        let tokens: Vec<u32> = b"abcd".iter().map(|b| u32::from(*b)).collect();
        let t = Tensor::from_slice(&tokens, (1, 4), &Device::Cpu).expect("t");
        let all = lm.forward_train(&t).expect("train");
        assert_eq!(all.dims(), &[1, 4, VOCAB_SIZE]);
        let mut s = lm.initial_state().expect("s");
        for (i, tok) in tokens.iter().enumerate() {
            let l = lm.step(&[*tok], &mut [&mut s]).expect("step");
            let row = all
                .narrow(1, i, 1)
                .and_then(|r| r.flatten_all())
                .and_then(|r| r.to_vec1::<f32>())
                .expect("row");
            for (a, b) in row.iter().zip(&l[0]) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
}
