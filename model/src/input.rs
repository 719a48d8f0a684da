//! The model's input: interleaved segments of text, visual codes and audio frames
//! ([`Segment`]), and what the forward derives from them once ([`Layout`]): each row's
//! modality, its Uni-RoPE `(t, h, w)` position and the bidirectional blocks of the
//! next-frame-and-scale mask.
//!
//! Positions (one running index `p`, the next free position):
//! - text and audio: `t = h = w = p`, then `p += 1` per token or frame;
//! - a visual segment of `F` frames with scales `(h_s, w_s)` (coarse to fine, the last the
//!   finest `(Hf, Wf)`) starting at `p0`: the token in cell `(i, j)` of scale `s` of frame `f`
//!   sits at `t = p0 + f`, `h = p0 + (2i + 1)·Hf / (2·h_s)`, `w = p0 + (2j + 1)·Wf / (2·w_s)`
//!   (integer division: the centre of its cell on the finest grid, so every scale of a frame
//!   covers the same area); after the segment `p = p0 + max(F, Hf, Wf)`.
//!
//! Row order inside a visual segment: frame by frame, each frame scale by scale from coarse to
//! fine, each scale row-major. Each (frame, scale) is one block: its rows see each other
//! (bidirectional) and every earlier row; every other row is causal.

use crate::config::ModelConfig;
use crate::forward::ModelError;
use crate::stats::Modality;
use moekit_ops::ColumnRanges;
use std::ops::Range;

/// One run of tokens of one modality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text token ids, each in `0..text_vocab`.
    Text(Vec<i32>),
    /// Visual codes of an image (one frame) or a video.
    Visual(Visual),
    /// Audio frames of residual-codec codes.
    Audio(Audio),
}

/// Multi-scale visual codes: `frames` frames, each the scales `scales` (coarse to fine), each
/// code a vector of `visual_code_bits` bits (embedded as ±1 through `embed.visual`).
///
/// The blocks of a visual segment are its (frame, scale) pairs, frame-major: block
/// `f · S + s`. A segment may hold only the blocks `blocks` of its image or video (generation
/// feeds one scale at a time): a segment whose blocks do not start at 0 continues the one fed
/// just before it (same frames and scales), at the same positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visual {
    /// Frames (1 for an image).
    pub frames: usize,
    /// `(rows, cols)` of each scale, coarse to fine.
    pub scales: Vec<(usize, usize)>,
    /// The blocks held, `None` for all.
    pub blocks: Option<Range<usize>>,
    /// `[tokens, bits]` row-major, each 0 or 1, tokens in the module's row order: each
    /// token's input code. In next-scale prediction a block carries the codes of the scale
    /// before it, upsampled to its size (zeros for the first scale): [`next_scale_inputs`]
    /// makes those inputs from an image's codes, and the visual head at a block's rows
    /// predicts the block's own codes.
    pub bits: Vec<u8>,
}

/// Nearest upsampling of the `[ph · pw, bits]` codes of one scale to `(h, w)`.
pub fn upsample(codes: &[u8], (ph, pw): (usize, usize), (h, w): (usize, usize), bits: usize) -> Vec<u8> {
    let mut out = vec![0u8; h * w * bits];
    for i in 0..h {
        for j in 0..w {
            let src = (i * ph / h) * pw + j * pw / w;
            out[(i * w + j) * bits..(i * w + j + 1) * bits].copy_from_slice(&codes[src * bits..(src + 1) * bits]);
        }
    }
    out
}

/// The inputs that teach an image or video's codes `codes` (every block, `bits` bits per
/// code) by next-scale prediction: per frame, zeros for the first scale, then each scale's
/// codes upsampled to the next. [`crate::Model::forward`] on the result predicts `codes` at
/// the visual rows; [`crate::generate_image`] feeds exactly these, one scale at a time.
pub fn next_scale_inputs(codes: &Visual, bits: usize) -> Visual {
    let mut out = Vec::with_capacity(codes.bits.len());
    let mut at = 0;
    for _ in 0..codes.frames {
        for (s, &hw) in codes.scales.iter().enumerate() {
            if s == 0 {
                out.extend(std::iter::repeat_n(0u8, hw.0 * hw.1 * bits));
            } else {
                let prev = codes.scales[s - 1];
                let n = prev.0 * prev.1 * bits;
                out.extend(upsample(&codes.bits[at..at + n], prev, hw, bits));
                at += n;
            }
        }
        let (lh, lw) = codes.scales[codes.scales.len() - 1];
        at += lh * lw * bits;
    }
    Visual { frames: codes.frames, scales: codes.scales.clone(), blocks: None, bits: out }
}

impl Visual {
    /// Every (frame, scale) block of the image or video.
    pub fn all_blocks(&self) -> Range<usize> {
        0..self.frames * self.scales.len()
    }

    /// The blocks this segment holds.
    pub fn held(&self) -> Range<usize> {
        self.blocks.clone().unwrap_or_else(|| self.all_blocks())
    }

    /// Rows of block `b`.
    pub fn block_rows(&self, b: usize) -> usize {
        let (h, w) = self.scales[b % self.scales.len()];
        h * w
    }

    /// Tokens this segment holds.
    pub fn tokens(&self) -> usize {
        self.held().map(|b| self.block_rows(b)).sum()
    }

    /// The positions one image or video spans on each axis: `max(F, Hf, Wf)`.
    pub fn extent(&self) -> usize {
        let (hf, wf) = self.scales.last().copied().unwrap_or((0, 0));
        self.frames.max(hf).max(wf)
    }
}

/// Audio frames: `[frames, levels]` codes row-major, each in `0..audio_codebook`; a frame is
/// embedded as the sum of its levels' embeddings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audio {
    /// `[frames, levels]` codes.
    pub codes: Vec<i32>,
}

impl Segment {
    /// Rows this segment takes in the sequence.
    pub fn rows(&self, cfg: &ModelConfig) -> usize {
        match self {
            Segment::Text(ids) => ids.len(),
            Segment::Visual(v) => v.tokens(),
            Segment::Audio(a) => a.codes.len() / cfg.audio_levels.max(1),
        }
    }

    /// The modality of its rows.
    pub fn modality(&self) -> Modality {
        match self {
            Segment::Text(_) => Modality::Text,
            Segment::Visual(v) if v.frames == 1 => Modality::Image,
            Segment::Visual(_) => Modality::Video,
            Segment::Audio(_) => Modality::Audio,
        }
    }

    /// Checks the segment against `cfg`.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the bad value.
    pub fn check(&self, cfg: &ModelConfig) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Input(m));
        match self {
            Segment::Text(ids) => {
                if let Some(i) = ids.iter().find(|&&i| i < 0 || i as usize >= cfg.text_vocab) {
                    return bad(format!("token id {i} outside the vocabulary 0..{}", cfg.text_vocab));
                }
            }
            Segment::Visual(v) => {
                if v.frames == 0 || v.scales.is_empty() || v.scales.iter().any(|&(h, w)| h == 0 || w == 0) {
                    return bad(format!(
                        "visual segment of {} frames and scales {:?}: all must be > 0",
                        v.frames, v.scales
                    ));
                }
                let (held, all) = (v.held(), v.all_blocks());
                if held.is_empty() || held.start < all.start || held.end > all.end {
                    return bad(format!("visual blocks {held:?} must be a non-empty part of {all:?}"));
                }
                if v.bits.len() != v.tokens() * cfg.visual_code_bits {
                    return bad(format!(
                        "visual segment holds {} bits, expected {} tokens × {} bits",
                        v.bits.len(),
                        v.tokens(),
                        cfg.visual_code_bits
                    ));
                }
                if let Some(b) = v.bits.iter().find(|&&b| b > 1) {
                    return bad(format!("visual bit {b} is not 0 or 1"));
                }
            }
            Segment::Audio(a) => {
                if a.codes.is_empty() || a.codes.len() % cfg.audio_levels != 0 {
                    return bad(format!(
                        "audio segment of {} codes: expected a positive multiple of {} levels",
                        a.codes.len(),
                        cfg.audio_levels
                    ));
                }
                if let Some(c) = a.codes.iter().find(|&&c| c < 0 || c as usize >= cfg.audio_codebook) {
                    return bad(format!("audio code {c} outside the codebook 0..{}", cfg.audio_codebook));
                }
            }
        }
        Ok(())
    }
}

/// What the forward derives from the segments of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Rows of the call.
    pub rows: usize,
    /// Each segment's rows, in order.
    pub segments: Vec<Range<usize>>,
    /// Each row's modality.
    pub modality: Vec<Modality>,
    /// `[3, rows]`: the t, h and w positions.
    pub positions: Vec<i32>,
    /// The bidirectional blocks (rows of one visual frame and scale), in order.
    pub blocks: Vec<Range<usize>>,
    /// The next free position after the call.
    pub next_position: i32,
}

impl Layout {
    /// Lays out `segments` from position `start`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no rows or a segment that [`Segment::check`] refuses.
    pub fn new(cfg: &ModelConfig, segments: &[Segment], start: i32) -> Result<Self, ModelError> {
        let mut prev_visual: Option<&Visual> = None;
        let mut l = Layout {
            rows: 0,
            segments: Vec::new(),
            modality: Vec::new(),
            positions: Vec::new(),
            blocks: Vec::new(),
            next_position: start,
        };
        let (mut t, mut h, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for s in segments {
            s.check(cfg)?;
            if let Segment::Visual(v) = s {
                let continues = prev_visual
                    .is_some_and(|p| p.frames == v.frames && p.scales == v.scales && p.held().end == v.held().start);
                if v.held().start > 0 && !(continues || (prev_visual.is_none() && l.rows == 0)) {
                    return Err(ModelError::Input(format!(
                        "visual blocks {:?} do not continue the visual segment before them",
                        v.held()
                    )));
                }
            }
            prev_visual = if let Segment::Visual(v) = s { Some(v) } else { None };
            let n = s.rows(cfg);
            let r0 = l.rows;
            let p0 = l.next_position;
            match s {
                Segment::Text(_) | Segment::Audio(_) => {
                    let p: Vec<i32> = (p0..p0 + n as i32).collect();
                    t.extend(&p);
                    h.extend(&p);
                    w.extend(&p);
                    l.next_position = p0 + n as i32;
                }
                Segment::Visual(v) => {
                    let (hf, wf) = v.scales[v.scales.len() - 1];
                    let extent = v.extent() as i32;
                    // A continuation sits where the blocks before it were fed.
                    let p0 = if v.held().start == 0 { p0 } else { p0 - extent };
                    let mut row = r0;
                    for blk in v.held() {
                        let (f, (hs, ws)) = (blk / v.scales.len(), v.scales[blk % v.scales.len()]);
                        for i in 0..hs {
                            for j in 0..ws {
                                t.push(p0 + f as i32);
                                h.push(p0 + ((2 * i + 1) * hf / (2 * hs)) as i32);
                                w.push(p0 + ((2 * j + 1) * wf / (2 * ws)) as i32);
                            }
                        }
                        l.blocks.push(row..row + hs * ws);
                        row += hs * ws;
                    }
                    l.next_position = p0 + extent;
                }
            }
            l.modality.extend(std::iter::repeat_n(s.modality(), n));
            l.segments.push(r0..r0 + n);
            l.rows += n;
        }
        if l.rows == 0 {
            return Err(ModelError::Input("no tokens".into()));
        }
        l.positions = [t, h, w].concat();
        Ok(l)
    }

    /// The FlashMask column ranges of these rows as queries after `past` cached rows (keys
    /// `0..past + rows`), or `None` when plain causal says the same (no visual block of more
    /// than one row). Column `j` masks query rows `0..start(j) - past`, where `start(j)` is
    /// the first row of `j`'s block (`j` itself outside blocks): causal, except that a block's
    /// rows see the whole block.
    pub fn column_ranges(&self, past: usize) -> Option<ColumnRanges> {
        if self.blocks.iter().all(|b| b.len() <= 1) {
            return None;
        }
        let keys = past + self.rows;
        let mut start: Vec<usize> = (0..keys).collect();
        for b in &self.blocks {
            for j in b.clone() {
                start[past + j] = past + b.start;
            }
        }
        let ute = start.iter().map(|&s| s.saturating_sub(past) as i32).collect();
        Some(ColumnRanges { lts: vec![0; keys], lte: vec![0; keys], uts: vec![0; keys], ute })
    }

    /// The rows of `modality`, as runs (whole segments).
    pub fn runs(&self, modality: impl Fn(Modality) -> bool) -> Vec<Range<usize>> {
        self.segments.iter().filter(|r| modality(self.modality[r.start])).cloned().collect()
    }
}
