//! What `moekit run`, `generate`, `report` and `bench` do once the backend is up.

use crate::bench;
use moekit_model::{
    demo_sequence, generate_audio, generate_image, generate_text, write_all, Elastic, Forward, Model, ModelConfig,
    Report, RoutingStats, Sampler, Segment, Weights,
};
use moekit_ops::{Backend, DType};
use std::path::PathBuf;
use std::time::Instant;

/// What to do once the backend is up.
#[derive(Debug)]
pub(crate) enum Action {
    Run { tokens: usize, iters: usize },
    Generate { prompt: usize, text: usize, image: Vec<(usize, usize)>, audio: usize, sampler: Box<Sampler> },
    Report { tokens: usize, out: PathBuf },
    Bench { plan: bench::BenchPlan, json: Option<PathBuf> },
}

/// The model to build and what to do with it.
pub(crate) struct RunPlan {
    pub(crate) cfg: ModelConfig,
    pub(crate) weights: Weights,
    pub(crate) dtype: DType,
    pub(crate) seed: u64,
    pub(crate) elastic: Elastic,
    pub(crate) action: Action,
}

pub(crate) fn run_on<B: Backend>(b: &B, p: &RunPlan) -> Result<(), String> {
    let cfg = &p.cfg;
    let t0 = Instant::now();
    let model = Model::new(b, cfg, &p.weights, p.dtype).map_err(|e| e.to_string())?;
    let upload = t0.elapsed().as_secs_f64();
    println!("backend      {} ({:?}), weights uploaded in {:.2} s", b.name(), p.dtype, upload);
    let sub = model.plan(&p.elastic).map_err(|e| e.to_string())?;
    let (layers, kept, k) = (sub.layers, sub.experts, sub.top_k);
    println!(
        "sub-model    layers {layers:?} of {}, {kept} of {} routed experts, top-{k} of {}",
        cfg.layers, cfg.routed_experts, cfg.top_k
    );
    match &p.action {
        Action::Run { tokens, iters } => run(&model, p, *tokens, *iters, kept),
        Action::Generate { prompt, text, image, audio, sampler } => {
            generate(&model, p, *prompt, *text, image, *audio, &mut (**sampler).clone())
        }
        Action::Bench { plan, json } => {
            let (text, lines) = bench::bench(&model, &p.elastic, plan)?;
            print!("{text}");
            if let Some(path) = json {
                std::fs::write(path, lines).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        }
        Action::Report { tokens, out } => {
            let segs = demo_sequence(cfg, *tokens, p.seed);
            let f = model.forward(&segs, &p.elastic).map_err(|e| e.to_string())?;
            let stats = routing_stats(cfg, &f);
            let files = write_all(&stats, out).map_err(|e| e.to_string())?;
            print!("{}", Report::new(&stats).table());
            println!("heatmap      {}", files.heatmap.display());
            println!("json         {}", files.json.display());
            Ok(())
        }
    }
}

/// Each MoE layer's choices counted per modality of their rows.
fn routing_stats(cfg: &ModelConfig, f: &Forward) -> RoutingStats {
    let mut stats = RoutingStats::new(cfg.routed_experts);
    for r in &f.routing {
        for (row, ids) in r.ids.chunks(r.k).enumerate() {
            stats.record(r.layer, f.layout.modality[row], ids);
        }
    }
    stats
}

fn run<B: Backend>(model: &Model<'_, B>, p: &RunPlan, tokens: usize, iters: usize, kept: usize) -> Result<(), String> {
    let cfg = &p.cfg;
    let segs = demo_sequence(cfg, tokens, p.seed);
    let kinds: Vec<String> = segs
        .iter()
        .map(|s| match s {
            Segment::Text(ids) => format!("text {}", ids.len()),
            Segment::Visual(v) => format!("image {:?} ({} tokens)", v.scales, v.tokens()),
            Segment::Audio(a) => format!("audio {} frames", a.codes.len() / cfg.audio_levels),
        })
        .collect();
    println!("input        {}", kinds.join(" | "));
    let f = model.forward(&segs, &p.elastic).map_err(|e| e.to_string())?;
    let rows = f.layout.rows;
    let stats = routing_stats(cfg, &f);
    for r in &f.routing {
        let counts = stats.layer_counts(r.layer, None).unwrap_or_default();
        let used = counts.iter().filter(|&&c| c > 0).count();
        let max = counts.iter().max().copied().unwrap_or(0);
        let mean = r.ids.len() as f64 / kept.max(1) as f64;
        println!(
            "routing      layer {:>2}: {used} experts used, busiest {max} rows ({:.2}× the mean), entropy {:.3}",
            r.layer,
            max as f64 / mean.max(1e-9),
            stats.entropy(r.layer).unwrap_or(0.0)
        );
    }
    let v = cfg.text_vocab;
    let logits = f.text_logits.to_f32_vec();
    let n = f.text_rows.len();
    let last = &logits[(n - 1) * v..n * v];
    let mut top: Vec<usize> = (0..v).collect();
    top.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    let shown: Vec<String> = top.iter().take(5).map(|&i| format!("{i} ({:.3})", last[i])).collect();
    println!("text head    last text row, top tokens: {}", shown.join(", "));
    let bits = cfg.visual_code_bits;
    let vis = f.visual_logits.to_f32_vec();
    let code: String = vis[..bits].iter().map(|&x| if x > 0.0 { '1' } else { '0' }).collect();
    println!("visual head  {} rows; first row's next-scale code bits {code}", f.visual_rows.len());
    let levels = cfg.audio_levels;
    let codes = &f.audio_codes[f.audio_codes.len() - levels..];
    println!("audio heads  {} rows; next frame's codes (level by level) {codes:?}", f.audio_rows.len());
    let finite = |t: &moekit_ops::HostTensor| t.to_f32_vec().iter().all(|x| x.is_finite());
    if !(finite(&f.text_logits) && finite(&f.visual_logits) && f.audio_logits.iter().all(finite)) {
        return Err("the logits hold non-finite values".into());
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        model.forward(&segs, &p.elastic).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    if let Some(best) = times.iter().copied().reduce(f64::min) {
        println!(
            "forward      {rows} rows: best {:.2} ms of {iters} ({:.0} tokens/s; includes the logits' download)",
            best * 1e3,
            rows as f64 / best
        );
    }
    Ok(())
}

fn generate<B: Backend>(
    model: &Model<'_, B>,
    p: &RunPlan,
    prompt: usize,
    text: usize,
    image: &[(usize, usize)],
    audio: usize,
    s: &mut Sampler,
) -> Result<(), String> {
    let cfg = &p.cfg;
    let e = &p.elastic;
    let img_rows: usize = image.iter().map(|&(h, w)| h * w).sum();
    let mut cache = model.cache(prompt + text + img_rows + audio + 1, e).map_err(|e| e.to_string())?;
    let ids: Vec<i32> =
        (0..prompt.max(1)).map(|i| ((i as u64 * 7919 + p.seed * 13 + 13) % cfg.text_vocab as u64) as i32).collect();
    let t = Instant::now();
    let out = generate_text(model, &mut cache, &[Segment::Text(ids.clone())], text, s, e).map_err(|e| e.to_string())?;
    let ts = t.elapsed().as_secs_f64();
    println!("text         prompt {ids:?}");
    println!("             generated {out:?} ({:.1} tokens/s after the prompt)", text as f64 / ts.max(1e-9));
    if !image.is_empty() {
        let t = Instant::now();
        let img = generate_image(model, &mut cache, image, s, e).map_err(|e| e.to_string())?;
        let bits = cfg.visual_code_bits;
        let first: String = img.bits[..bits].iter().map(|b| char::from(b'0' + b)).collect();
        println!(
            "image        scales {image:?}: {} codes of {bits} bits in {:.1} ms; first code {first}",
            img.bits.len() / bits,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    if audio > 0 {
        let t = Instant::now();
        let a = generate_audio(model, &mut cache, audio, s, e).map_err(|e| e.to_string())?;
        println!(
            "audio        {audio} frames in {:.1} ms: {:?}",
            t.elapsed().as_secs_f64() * 1e3,
            a.codes.chunks(cfg.audio_levels).collect::<Vec<_>>()
        );
    }
    println!("cache        {} rows", cache.len());
    Ok(())
}
