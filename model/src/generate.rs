//! Decoding loops over a [`KvCache`]: text token by token ([`generate_text`]: greedy,
//! temperature and top-p, seeded), images one scale at a time with every token of a scale in
//! parallel ([`generate_image`]), audio one frame at a time, level by level
//! ([`generate_audio`]); and the demonstration sequence `moekit run` and `moekit report`
//! send ([`demo_sequence`]).

use crate::config::ModelConfig;
use crate::forward::{argmax, Elastic, Heads, KvCache, Model, ModelError};
use crate::input::{upsample, Audio, Segment, Visual};
use moekit_ops::Backend;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// How the next token is drawn from logits.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// 0 for greedy; otherwise the softmax temperature.
    pub temperature: f32,
    /// Nucleus: sample among the most likely tokens whose probabilities sum to `top_p`
    /// (1 for all).
    pub top_p: f32,
    rng: StdRng,
}

impl Sampler {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Sampler { temperature: 0.0, top_p: 1.0, rng: StdRng::seed_from_u64(0) }
    }

    /// Sampling at `temperature` with nucleus `top_p` from a generator seeded with `seed`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a negative or non-finite temperature or `top_p` outside
    /// `(0, 1]`.
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self, ModelError> {
        let ok = temperature.is_finite() && temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0;
        if !ok {
            return Err(ModelError::Input(format!(
                "temperature {temperature} must be >= 0 and top_p {top_p} in (0, 1]"
            )));
        }
        Ok(Sampler { temperature, top_p, rng: StdRng::seed_from_u64(seed) })
    }

    /// The index drawn from `logits`.
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut p: Vec<(usize, f64)> =
            logits.iter().enumerate().map(|(i, &x)| (i, (((x - max) / self.temperature) as f64).exp())).collect();
        p.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = p.iter().map(|x| x.1).sum();
        let mut kept = 0.0;
        let mut n = 0;
        while n < p.len() && (n == 0 || kept < self.top_p as f64 * total) {
            kept += p[n].1;
            n += 1;
        }
        let mut u = self.rng.gen::<f64>() * kept;
        for &(i, w) in &p[..n] {
            if u < w {
                return i;
            }
            u -= w;
        }
        p[n - 1].0
    }

    /// One bit drawn from its logit: `logit > 0` when greedy, else a draw with probability
    /// `sigmoid(logit / temperature)`.
    pub fn bit(&mut self, logit: f32) -> u8 {
        if self.temperature == 0.0 {
            return u8::from(logit > 0.0);
        }
        let p = 1.0 / (1.0 + (-(logit / self.temperature) as f64).exp());
        u8::from(self.rng.gen::<f64>() < p)
    }
}

/// Appends `new` text tokens after `prompt` (which must end with a text token): each drawn
/// by `s` from the last row's text logits and fed back through the cache.
///
/// # Errors
/// [`ModelError::Input`] for a prompt that does not end with text, as [`Model::step`].
pub fn generate_text<B: Backend>(
    m: &Model<'_, B>,
    cache: &mut KvCache<B::Buffer>,
    prompt: &[Segment],
    new: usize,
    s: &mut Sampler,
    e: &Elastic,
) -> Result<Vec<i32>, ModelError> {
    let v = m.config().text_vocab;
    let mut f = m.step(cache, prompt, e)?;
    let mut out = Vec::with_capacity(new);
    for _ in 0..new {
        let last = f.layout.rows - 1;
        if f.text_rows.last() != Some(&last) {
            return Err(ModelError::Input("text generation needs input that ends with a text token".into()));
        }
        let logits = f.text_logits.to_f32_vec();
        let n = f.text_rows.len();
        let tok = s.pick(&logits[(n - 1) * v..n * v]) as i32;
        out.push(tok);
        f = m.step(cache, &[Segment::Text(vec![tok])], e)?;
    }
    Ok(out)
}

/// Generates an image of `scales` (coarse to fine) after the rows in `cache`, one scale per
/// step: scale `s`'s input codes are the codes of scale `s - 1` upsampled (nearest) to its
/// size (all bits 0 for the first), all its tokens run in parallel, and its codes are drawn
/// bit by bit from the visual head. Returns the image's codes, every scale
/// ([`crate::input::next_scale_inputs`] of them are the inputs it fed).
///
/// # Errors
/// As [`Model::step`].
pub fn generate_image<B: Backend>(
    m: &Model<'_, B>,
    cache: &mut KvCache<B::Buffer>,
    scales: &[(usize, usize)],
    s: &mut Sampler,
    e: &Elastic,
) -> Result<Visual, ModelError> {
    let bits = m.config().visual_code_bits;
    let mut codes: Vec<u8> = Vec::new();
    let mut prev: Option<(usize, usize, Vec<u8>)> = None;
    for (si, &(h, w)) in scales.iter().enumerate() {
        let input = match &prev {
            Some((ph, pw, pc)) => upsample(pc, (*ph, *pw), (h, w), bits),
            None => vec![0u8; h * w * bits],
        };
        let seg = Visual { frames: 1, scales: scales.to_vec(), blocks: Some(si..si + 1), bits: input };
        let f = m.step(cache, &[Segment::Visual(seg)], e)?;
        let out: Vec<u8> = f.visual_logits.to_f32_vec().into_iter().map(|x| s.bit(x)).collect();
        codes.extend(&out);
        prev = Some((h, w, out));
    }
    Ok(Visual { frames: 1, scales: scales.to_vec(), blocks: None, bits: codes })
}

/// Generates `frames` audio frames after the rows in `cache`: each step feeds the last frame
/// (a frame of code 0 first) and the depth-wise heads choose the next frame's codes level by
/// level, each drawn by `s` and conditioning the next level. Returns `[frames, levels]` codes.
///
/// # Errors
/// As [`Model::step`].
pub fn generate_audio<B: Backend>(
    m: &Model<'_, B>,
    cache: &mut KvCache<B::Buffer>,
    frames: usize,
    s: &mut Sampler,
    e: &Elastic,
) -> Result<Audio, ModelError> {
    let levels = m.config().audio_levels;
    let mut frame = vec![0i32; levels];
    let mut codes = Vec::with_capacity(frames * levels);
    for _ in 0..frames {
        let f =
            m.step_sampled(cache, &[Segment::Audio(Audio { codes: frame })], e, Heads::All, &mut |_, row| s.pick(row))?;
        frame = f.audio_codes[f.audio_codes.len() - levels..].to_vec();
        codes.extend(&frame);
    }
    Ok(Audio { codes })
}

/// A mixed sequence of about `tokens` rows from `seed`: text, an image of scales 1×1, 2×2
/// and 4×4 (21 tokens), text, 8 audio frames, text.
pub fn demo_sequence(cfg: &ModelConfig, tokens: usize, seed: u64) -> Vec<Segment> {
    let mut rng = StdRng::seed_from_u64(seed);
    let text_rows = tokens.saturating_sub(29).max(3);
    let mut text = |n: usize| Segment::Text((0..n).map(|_| rng.gen_range(0..cfg.text_vocab as i32)).collect());
    let (a, b) = (text_rows / 2, text_rows / 4);
    let (t0, t1, t2) = (text(a), text(b.max(1)), text((text_rows - a - b).max(1)));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let scales = vec![(1, 1), (2, 2), (4, 4)];
    let bits = (0..21 * cfg.visual_code_bits).map(|_| rng.gen_range(0..2u8)).collect();
    let image = Segment::Visual(Visual { frames: 1, scales, blocks: None, bits });
    let codes = (0..8 * cfg.audio_levels).map(|_| rng.gen_range(0..cfg.audio_codebook as i32)).collect();
    vec![t0, image, t1, Segment::Audio(Audio { codes }), t2]
}
