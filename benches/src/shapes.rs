//! The shape table: named MoE layer shapes from real models, small ones for the CPU, and
//! `custom:T=..,H=..,E=..,k=..,I=..,skew=..` for any other.

use std::fmt;

/// A packed attention batch: `batch` sequences of `seq` tokens each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Sequences `B`.
    pub batch: usize,
    /// Query heads `Hq`.
    pub heads_q: usize,
    /// Key/value heads `Hkv` (divides `Hq`).
    pub heads_kv: usize,
    /// Tokens per sequence `S` (queries and keys).
    pub seq: usize,
    /// Head dim `D` (64, 128 or 256).
    pub head_dim: usize,
    /// The mask of every sequence.
    pub mask: AttnMask,
}

/// The mask of a benchmarked attention batch: none, causal, or FlashMask column ranges (with
/// no causal flag: the ranges say everything) of one of three patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnMask {
    /// Every key (`0`).
    None,
    /// Causal (`1`).
    Causal,
    /// Causal written as column ranges (`ranges`): what the ranges cost over the flag.
    CausalRanges,
    /// Packed documents (`docs`): causal inside each document, nothing across them
    /// ([`crate::masks::documents`]).
    Documents,
    /// A 4-scale image inside text (`image`): next-frame-and-scale prediction, each scale a
    /// bidirectional block, causal across blocks and over the text ([`crate::masks::image`]).
    Image,
    /// The documents of [`AttnMask::Documents`] as sequences of their own, causal
    /// (`docs-varlen`): the plain causal problem with the same allowed pairs, to compare with.
    DocumentsVarlen,
    /// Decode (`decN`): `N` query rows per sequence (the last ones, causal) against its `S`
    /// keys, as after a prefill of `S - N` tokens.
    Decode(usize),
}

impl AttnMask {
    const WORDS: [(&'static str, AttnMask); 6] = [
        ("0", AttnMask::None),
        ("1", AttnMask::Causal),
        ("ranges", AttnMask::CausalRanges),
        ("docs", AttnMask::Documents),
        ("image", AttnMask::Image),
        ("docs-varlen", AttnMask::DocumentsVarlen),
    ];

    /// The mask's field in the peer lines' dims: 0 none, 1 causal, 2–5 the column-range
    /// patterns and the varlen documents, 100 + N decode with N query rows (which no peer line
    /// has).
    pub fn code(self) -> usize {
        match self {
            AttnMask::Decode(q) => 100 + q,
            m => Self::WORDS.iter().position(|&(_, w)| w == m).unwrap_or(0),
        }
    }

    /// Its spelling in `--attn`.
    pub fn word(self) -> String {
        match self {
            AttnMask::Decode(q) => format!("dec{q}"),
            m => Self::WORDS[m.code()].0.to_string(),
        }
    }

    /// Query rows per sequence of `seq` keys: `N` for decode, else `seq`.
    pub fn queries(self, seq: usize) -> usize {
        match self {
            AttnMask::Decode(q) => q.min(seq),
            _ => seq,
        }
    }
}

impl AttnShape {
    /// Parse `B,Hq,Hkv,S,D` or `B,Hq,Hkv,S,D,mask`, the mask one of `0` (none), `1` (causal,
    /// the default), `ranges`, `docs`, `image`, `docs-varlen`, `decN` ([`AttnMask`]; S keys).
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn parse(s: &str) -> Result<Self, String> {
        let fields: Vec<&str> = s.split(',').map(str::trim).collect();
        if !(fields.len() == 5 || fields.len() == 6) {
            return Err(format!("--attn `{s}`: expected B,Hq,Hkv,S,D[,mask]"));
        }
        let v: Vec<usize> = fields[..5]
            .iter()
            .map(|x| x.parse::<usize>().map_err(|e| format!("--attn `{s}`: `{x}`: {e}")))
            .collect::<Result<_, _>>()?;
        if v.contains(&0) {
            return Err(format!("--attn `{s}`: every size must be > 0"));
        }
        let decode = |w: &str| w.strip_prefix("dec")?.parse::<usize>().ok().filter(|&q| (1..=v[3]).contains(&q));
        let mask = match fields.get(5) {
            None => AttnMask::Causal,
            Some(w) => match decode(w) {
                Some(q) => AttnMask::Decode(q),
                None => AttnMask::WORDS.iter().find(|(word, _)| word == w).map(|&(_, m)| m).ok_or_else(|| {
                    let words: Vec<&str> = AttnMask::WORDS.iter().map(|(w, _)| *w).collect();
                    format!("--attn `{s}`: mask `{w}` is none of {words:?} nor decN (1 <= N <= S)")
                })?,
            },
        };
        Ok(AttnShape { batch: v[0], heads_q: v[1], heads_kv: v[2], seq: v[3], head_dim: v[4], mask })
    }

    /// A default batch for a layer of `tokens` tokens and hidden size `hidden`: sequences of
    /// up to 4096 tokens, head dim 128 (64 below hidden 1024), `H / D` query heads and a GQA
    /// group of 4 where it divides.
    pub fn derive(tokens: usize, hidden: usize) -> Self {
        let head_dim = if hidden >= 1024 { 128 } else { 64 };
        let heads_q = (hidden / head_dim).max(1);
        let heads_kv = if heads_q % 4 == 0 { heads_q / 4 } else { heads_q };
        let seq = tokens.clamp(1, 4096);
        AttnShape { batch: (tokens / seq).max(1), heads_q, heads_kv, seq, head_dim, mask: AttnMask::Causal }
    }

    /// The peer lines' spelling: `[B, Hq, Hkv, S, D, causal]` (the mask's [`AttnMask::code`]).
    pub fn dims(&self) -> Vec<usize> {
        vec![self.batch, self.heads_q, self.heads_kv, self.seq, self.head_dim, self.mask.code()]
    }
}

/// One MoE layer shape.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeShape {
    /// Name as printed (`qwen3-30b-a3b`, `small`, or the `custom:...` spelling).
    pub name: String,
    /// Tokens `T`.
    pub tokens: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Routed experts `E`.
    pub experts: usize,
    /// Top-k.
    pub k: usize,
    /// Expert intermediate size `I`.
    pub inter: usize,
    /// Zipf exponent of the expert popularity (0: uniform routing).
    pub skew: f64,
    /// The attention batch benchmarked with this shape.
    pub attn: AttnShape,
}

impl fmt::Display for MoeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (T{} H{} E{} k{} I{} skew {})",
            self.name, self.tokens, self.hidden, self.experts, self.k, self.inter, self.skew
        )
    }
}

/// `(name, T, H, E, k, I, attention)` of the named shapes.
type Row = (&'static str, usize, usize, usize, usize, usize, AttnShape);

const fn attn(batch: usize, heads_q: usize, heads_kv: usize, seq: usize, head_dim: usize) -> AttnShape {
    AttnShape { batch, heads_q, heads_kv, seq, head_dim, mask: AttnMask::Causal }
}

// NOTE: attention heads follow the models' configs (Qwen3-30B-A3B 32/4, ERNIE-4.5-21B-A3B
// 20/4, head dim 128). DeepSeek-V3 uses MLA; it is benchmarked as plain MHA with 128 heads of
// dim 128, the nearest op moekit has.
const TABLE: [Row; 5] = [
    ("qwen3-30b-a3b", 16384, 2048, 128, 8, 768, attn(4, 32, 4, 4096, 128)),
    ("ernie45-21b-a3b", 16384, 2560, 64, 6, 1536, attn(4, 20, 4, 4096, 128)),
    ("deepseek-v3", 8192, 7168, 256, 8, 2048, attn(2, 128, 128, 4096, 128)),
    ("small", 512, 512, 16, 4, 256, attn(2, 8, 2, 256, 64)),
    ("tiny", 64, 128, 8, 2, 64, attn(2, 2, 1, 32, 64)),
];

/// The shapes `small-set` stands for: the ones the CPU main job runs.
pub const SMALL_SET: [&str; 2] = ["tiny", "small"];

/// The public model shapes (the GPU benchmark's set).
pub const PUBLIC_SET: [&str; 3] = ["qwen3-30b-a3b", "ernie45-21b-a3b", "deepseek-v3"];

/// Every named shape, in table order.
pub fn named() -> Vec<MoeShape> {
    TABLE
        .iter()
        .map(|&(name, tokens, hidden, experts, k, inter, attn)| MoeShape {
            name: name.to_string(),
            tokens,
            hidden,
            experts,
            k,
            inter,
            skew: 0.0,
            attn,
        })
        .collect()
}

/// Resolve one `--shape` argument: a table name, `small-set`, `public-set`, or
/// `custom:T=..,H=..,E=..,k=..,I=..[,skew=..]`.
///
/// # Errors
/// A message listing the known names, or naming the bad custom field.
pub fn resolve(arg: &str) -> Result<Vec<MoeShape>, String> {
    let table = named();
    let pick = |names: &[&str]| -> Option<Vec<MoeShape>> {
        names.iter().map(|n| table.iter().find(|s| s.name == *n).cloned()).collect()
    };
    match arg {
        "small-set" => pick(&SMALL_SET).ok_or_else(|| "small-set names a missing shape".to_string()),
        "public-set" => pick(&PUBLIC_SET).ok_or_else(|| "public-set names a missing shape".to_string()),
        _ if arg.starts_with("custom:") => parse_custom(&arg["custom:".len()..]).map(|s| vec![s]),
        _ => table.iter().find(|s| s.name == arg).cloned().map(|s| vec![s]).ok_or_else(|| {
            let names: Vec<_> = table.iter().map(|s| s.name.as_str()).collect();
            format!("unknown shape `{arg}`: known {names:?}, small-set, public-set, custom:T=..,H=..,E=..,k=..,I=..,skew=..")
        }),
    }
}

/// Parse the body of a `custom:` shape: `T`, `H`, `E`, `k`, `I` required, `skew` optional
/// (default 0).
///
/// # Errors
/// A message naming the missing, unknown or bad field.
pub fn parse_custom(body: &str) -> Result<MoeShape, String> {
    let (mut t, mut h, mut e, mut k, mut i, mut skew) = (None, None, None, None, None, 0.0f64);
    for field in body.split(',').filter(|f| !f.trim().is_empty()) {
        let (key, val) =
            field.split_once('=').ok_or_else(|| format!("custom shape field `{field}` is not KEY=VALUE"))?;
        let int = || val.trim().parse::<usize>().map_err(|err| format!("custom shape `{key}={val}`: {err}"));
        match key.trim() {
            "T" => t = Some(int()?),
            "H" => h = Some(int()?),
            "E" => e = Some(int()?),
            "k" => k = Some(int()?),
            "I" => i = Some(int()?),
            "skew" => {
                skew = val.trim().parse::<f64>().map_err(|err| format!("custom shape `skew={val}`: {err}"))?;
                if !(skew.is_finite() && skew >= 0.0) {
                    return Err(format!("custom shape: skew {skew} must be finite and >= 0"));
                }
            }
            other => return Err(format!("custom shape: unknown field `{other}` (fields: T, H, E, k, I, skew)")),
        }
    }
    let need = |v: Option<usize>, name: &str| match v {
        Some(0) => Err(format!("custom shape: {name} must be > 0")),
        Some(v) => Ok(v),
        None => Err(format!("custom shape: missing {name}= (need T, H, E, k, I)")),
    };
    let (tokens, hidden, experts, k, inter) =
        (need(t, "T")?, need(h, "H")?, need(e, "E")?, need(k, "k")?, need(i, "I")?);
    if k > experts {
        return Err(format!("custom shape: k = {k} exceeds E = {experts}"));
    }
    Ok(MoeShape {
        name: format!("custom:T={tokens},H={hidden},E={experts},k={k},I={inter},skew={skew}"),
        tokens,
        hidden,
        experts,
        k,
        inter,
        skew,
        attn: AttnShape::derive(tokens, hidden),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_shapes_match_the_issue() {
        let q = &resolve("qwen3-30b-a3b").unwrap()[0];
        assert_eq!((q.tokens, q.hidden, q.experts, q.k, q.inter), (16384, 2048, 128, 8, 768));
        let e = &resolve("ernie45-21b-a3b").unwrap()[0];
        assert_eq!((e.tokens, e.hidden, e.experts, e.k, e.inter), (16384, 2560, 64, 6, 1536));
        let d = &resolve("deepseek-v3").unwrap()[0];
        assert_eq!((d.tokens, d.hidden, d.experts, d.k, d.inter), (8192, 7168, 256, 8, 2048));
        let s = &resolve("small").unwrap()[0];
        assert_eq!((s.tokens, s.hidden, s.experts, s.k, s.inter), (512, 512, 16, 4, 256));
        assert_eq!(resolve("small-set").unwrap().len(), SMALL_SET.len());
    }

    #[test]
    fn attention_batches_cover_the_tokens() {
        for s in named() {
            assert_eq!(s.attn.batch * s.attn.seq, s.tokens, "{}", s.name);
            assert_eq!(s.attn.heads_q % s.attn.heads_kv, 0, "{}", s.name);
        }
    }

    #[test]
    fn custom_parses_every_field() {
        let s = parse_custom("T=100,H=72,E=9,k=3,I=40,skew=1.2").unwrap();
        assert_eq!((s.tokens, s.hidden, s.experts, s.k, s.inter), (100, 72, 9, 3, 40));
        assert!((s.skew - 1.2).abs() < 1e-12);
        assert_eq!(s.attn.batch * s.attn.seq, 100);
    }

    #[test]
    fn custom_rejects_bad_input() {
        for bad in ["T=1,H=2,E=3,k=1", "T=1,H=2,E=3,k=4,I=5", "T=0,H=2,E=3,k=1,I=1", "T=1,H=2,E=3,k=1,I=1,x=2"] {
            assert!(parse_custom(bad).is_err(), "{bad}");
        }
        assert!(parse_custom("T=1,H=2,E=3,k=1,I=1,skew=-1").is_err());
        assert!(resolve("nope").is_err());
    }

    #[test]
    fn attn_parses_with_and_without_causal() {
        let a = AttnShape::parse("4,32,8,4096,128").unwrap();
        assert_eq!(a.dims(), vec![4, 32, 8, 4096, 128, 1]);
        assert_eq!(AttnShape::parse("2,32,8,8192,128,0").unwrap().mask, AttnMask::None);
        let docs = AttnShape::parse("1,32,8,16384,128, docs").unwrap();
        assert_eq!((docs.mask, docs.dims()[5], docs.mask.word()), (AttnMask::Documents, 3, "docs".to_string()));
        for w in ["0", "1", "ranges", "docs", "image", "docs-varlen"] {
            assert_eq!(AttnShape::parse(&format!("1,2,1,64,64,{w}")).unwrap().mask.word(), w);
        }
        assert!(AttnShape::parse("1,2,1,64,64,2").is_err());
        let dec = AttnShape::parse("8,32,8,8192,128,dec1").unwrap();
        assert_eq!(
            (dec.mask, dec.dims()[5], dec.mask.word(), dec.mask.queries(8192)),
            (AttnMask::Decode(1), 101, "dec1".into(), 1)
        );
        assert!(AttnShape::parse("1,2,1,64,64,dec0").is_err() && AttnShape::parse("1,2,1,64,64,dec65").is_err());
        assert!(AttnShape::parse("2,32,8").is_err());
        assert!(AttnShape::parse("2,0,8,1,64").is_err());
    }
}
